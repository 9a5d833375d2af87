//! Effects: tasks run against participant servers the tests start on loopback, their
//! results delivered back through the definition, durably and exactly once.

use crate::support::{Backend, Participant, Received, Reply, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

both_backends!(
    a_trip_reserves_a_flight_then_a_hotel,
    a_refused_hotel_cancels_the_flight,
    a_failing_participant_is_retried_under_one_task_id,
    an_attempt_that_hangs_times_out,
    a_participant_may_answer_202_and_report_later,
    a_task_bound_to_nobody_fails_as_unbound,
    a_task_in_flight_survives_a_kill,
    an_https_participant_is_reached_only_when_its_certificate_is_trusted,
    a_lease_outlived_by_its_attempt_is_extended_so_no_other_host_takes_it,
    bad_reports_are_refused,
    a_timer_fires_once_after_its_delay,
    a_cancelled_timer_does_not_fire,
    a_timer_due_while_the_server_is_down_fires_after_the_restart,
    events_apply_once_per_event_id_in_the_order_received,
    an_event_the_definition_fails_on_is_kept_and_applied_later_in_order,
    a_refused_event_is_kept_and_changes_nothing,
    malformed_events_are_refused,
    a_child_starts_once_and_its_end_reaches_its_parent,
    a_child_that_cannot_start_reaches_its_parent_as_failed,
    an_admin_cancel_closes_open_effects_and_cancels_children,
    children_left_running_under_a_cancelled_parent_are_cancelled_on_start,
    an_override_goes_through_the_definition,
    a_terminal_callback_is_signed_and_retried_until_delivered,
    a_callback_answered_410_is_not_retried,
    callback_urls_into_private_networks_are_refused,
    bad_effects_are_refused_and_change_nothing,
);

const FLIGHTS: &str = "/flights/reserve";
const HOTELS: &str = "/hotels/reserve";
const CANCEL: &str = "/flights/cancel";

/// A server with trip-booking deployed and its tasks bound to `participant` (all three,
/// or all but `hotels.reserve` when `hotel_bound` is false).
async fn trip_server(backend: Backend, participant: &Participant, hotel_bound: bool) -> TestServer {
    let mut toml = String::from(
        "[effects]\npoll_interval_ms = 100\nattempt_timeout_ms = 300\n\
         retry = { max_attempts = 3, initial_interval_ms = 20, max_interval_ms = 50 }\n",
    );
    for (task, path) in [("flights.reserve", FLIGHTS), ("hotels.reserve", HOTELS), ("flights.cancel", CANCEL)]
    {
        if hotel_bound || path != HOTELS {
            toml.push_str(&format!("[tasks.\"{task}\"]\nurl = \"{}\"\n", participant.url(path)));
        }
    }
    let server = TestServer::start_with_config(backend, &toml).await;
    server.deploy(module("trip-booking")).await.expect(201);
    server
}

async fn book(server: &TestServer) -> String {
    let input = json!({ "trip_id": "T-7", "flight": { "to": "LIS" }, "hotel": { "city": "Lisbon" } });
    let created = server.create("trip-booking", input).await;
    assert_eq!(created["state"], "INITIATED");
    created["id"].as_str().expect("id").to_owned()
}

fn step(kind: &str, name: &str, to: &str) -> (String, String, String) {
    (kind.into(), name.into(), to.into())
}

async fn a_trip_reserves_a_flight_then_a_hotel(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Reserve]);
    participant.script(HOTELS, vec![Reply::Reserve]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("COMPLETED"), Some("completed")));

    let [flight] = participant.received(FLIGHTS).try_into().expect("one flight request");
    let [hotel] = participant.received(HOTELS).try_into().expect("one hotel request");
    assert_eq!(done["data"]["flight_reservation"], format!("R-{}", flight.task_id()));
    assert_eq!(done["data"]["hotel_reservation"], format!("R-{}", hotel.task_id()));
    // Both tasks were handed to the executor by the commits that asked for them.
    assert_eq!(server.metric("switchyard_task_dispatch_seconds_count").await, 2.0);
    // What a participant receives.
    assert_eq!(flight.body["task"], "flights.reserve");
    assert_eq!(flight.body["instance_id"], id.as_str());
    assert_eq!(
        (flight.body["definition"].as_str(), flight.body["definition_version"].as_u64()),
        (Some("trip-booking"), Some(1))
    );
    assert_eq!(flight.body["attempt"], 1);
    assert_eq!(flight.body["input"], json!({ "trip_id": "T-7", "flight": { "to": "LIS" } }));
    assert_eq!(flight.idempotency_key.as_deref(), Some(flight.task_id()));
    assert!(flight.correlation_id.is_some());
    let report_url = format!("{}/v1/tasks/{}/result", server.base_url, flight.task_id());
    assert_eq!(flight.body["report_url"], report_url.as_str());
    assert_ne!(flight.task_id(), hotel.task_id());
    assert!(participant.received(CANCEL).is_empty(), "nothing to compensate");

    assert_eq!(
        server.steps(&id).await,
        [
            step("start", "init", "INITIATED"),
            step("effect", "task.succeeded", "FLIGHT_RESERVED"),
            step("effect", "task.succeeded", "COMPLETED"),
        ]
    );
}

async fn a_refused_hotel_cancels_the_flight(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Reserve]);
    participant.script(HOTELS, vec![Reply::Json(409, json!({ "error": "sold out" }))]);
    participant.script(CANCEL, vec![Reply::Json(200, json!({}))]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let done = server.finished(&id).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("FAILED"), Some("failed")));
    assert_eq!(done["data"]["flight_cancelled"], true);

    let [flight] = participant.received(FLIGHTS).try_into().expect("one flight request");
    assert_eq!(participant.received(HOTELS).len(), 1, "a final 4xx is not retried");
    let [cancel] = participant.received(CANCEL).try_into().expect("the flight cancelled once");
    assert_eq!(
        cancel.body["input"],
        json!({ "trip_id": "T-7", "reservation_id": format!("R-{}", flight.task_id()) })
    );
    assert_eq!(
        server.steps(&id).await,
        [
            step("start", "init", "INITIATED"),
            step("effect", "task.succeeded", "FLIGHT_RESERVED"),
            step("effect", "task.failed", "COMPENSATING"),
            step("effect", "task.succeeded", "FAILED"),
        ]
    );
    let entries = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let hotel_failure = &entries["items"][2]["trigger"]["payload"]["error"];
    assert_eq!((hotel_failure["kind"].as_str(), hotel_failure["status"].as_u64()), (Some("http"), Some(409)));
    assert!(hotel_failure["body"].as_str().is_some_and(|body| body.contains("sold out")), "{hotel_failure}");
}

async fn a_failing_participant_is_retried_under_one_task_id(backend: Backend) {
    let participant = Participant::start().await;
    let unavailable = Reply::Json(503, json!({ "error": "try later" }));
    participant.script(FLIGHTS, vec![unavailable.clone(), unavailable, Reply::Reserve]);
    participant.script(HOTELS, vec![Reply::Reserve]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    let attempts = participant.received(FLIGHTS);
    let task_ids: Vec<&str> = attempts.iter().map(|attempt| attempt.task_id()).collect();
    assert_eq!(task_ids.len(), 3);
    assert!(task_ids.iter().all(|task_id| *task_id == task_ids[0]), "one task_id: {task_ids:?}");
    let numbers: Vec<u64> = attempts.iter().filter_map(|attempt| attempt.body["attempt"].as_u64()).collect();
    assert_eq!(numbers, [1, 2, 3]);

    let diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
    let flight = &diagnostics["effects"][0];
    assert_eq!(
        (flight["id"].as_str(), flight["name"].as_str()),
        (Some(task_ids[0]), Some("flights.reserve"))
    );
    assert_eq!((flight["status"].as_str(), flight["attempts"].as_u64()), (Some("done"), Some(3)));
    assert!(flight["last_error"].as_str().is_some_and(|error| error.contains("503")), "{flight}");
    assert_eq!(flight["result"]["name"], "task.succeeded");
    assert_eq!(
        (diagnostics["effects"][1]["attempts"].as_u64(), diagnostics["open_timers"].as_array().map(Vec::len)),
        (Some(1), Some(0))
    );
    let deployed = server.get("/v1/definitions/trip-booking/versions/1").await.expect(200).json();
    assert_eq!(diagnostics["module_sha256"], deployed["sha256"]);
    assert_eq!(diagnostics["recent_calls"].as_array().map(Vec::len), Some(3));
    let records = diagnostics["idempotency_records"].as_array().expect("idempotency records");
    let kept: Vec<(&str, u64)> = records
        .iter()
        .filter_map(|record| Some((record["scope"].as_str()?, record["status"].as_u64()?)))
        .collect();
    assert_eq!(kept, [("POST /v1/definitions/trip-booking/instances by anonymous", 201)], "the create's key");
}

async fn an_attempt_that_hangs_times_out(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Hang(Duration::from_secs(3))]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(participant.received(FLIGHTS).len(), 3, "every attempt timed out, then retries ran out");
    let entries = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let error = &entries["items"][1]["trigger"]["payload"]["error"];
    assert_eq!((error["kind"].as_str(), error["attempts"].as_u64()), (Some("timeout"), Some(3)), "{error}");
    assert!(participant.received(HOTELS).is_empty() && participant.received(CANCEL).is_empty());
}

/// A trip whose flight is reserved and whose hotel's participant answered 202: the
/// participant, the server, the trip's id and the hotel's request.
pub(crate) async fn trip_waiting_for_its_hotel(
    backend: Backend,
) -> (Participant, TestServer, String, Received) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Reserve]);
    participant.script(HOTELS, vec![Reply::Json(202, json!({}))]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let [hotel] = participant.wait_for(HOTELS, 1).await.try_into().expect("one hotel request");
    (participant, server, id, hotel)
}

async fn a_participant_may_answer_202_and_report_later(backend: Backend) {
    let (participant, server, id, hotel) = trip_waiting_for_its_hotel(backend).await;
    let report_url = hotel.body["report_url"].as_str().expect("a report_url").to_owned();
    // The participant has answered 202; the host records that it waits for the report.
    let mut diagnostics = Value::Null;
    for _ in 0..1000 {
        diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
        if diagnostics["effects"][1]["status"] == "waiting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = &diagnostics["effects"][1];
    assert_eq!(
        (waiting["status"].as_str(), waiting["attempts"].as_u64()),
        (Some("waiting"), Some(1)),
        "{waiting}"
    );
    assert!(waiting["next_attempt_at"].is_string(), "the report deadline: {waiting}");
    let path = report_url.strip_prefix(&server.base_url).expect("on this server").to_owned();
    let report = json!({ "status": "succeeded", "output": { "reservation_id": "H-late" } });
    let first = server.post(&path, "report-1", &report).await.expect(200).json();
    assert_eq!(first["status"], "applied");
    let done = server.finished(&id).await;
    assert_eq!(
        (done["state"].as_str(), done["data"]["hotel_reservation"].as_str()),
        (Some("COMPLETED"), Some("H-late"))
    );
    // The same report again, under another key: a duplicate; another report: a conflict.
    let again = server.post(&path, "report-2", &report).await.expect(200).json();
    assert_eq!(again["status"], "duplicate");
    let other = json!({ "status": "failed", "error": { "reason": "changed my mind" } });
    assert_problem(&server.post(&path, "report-3", &other).await, 409, "report-conflict");
    assert_eq!(server.steps(&id).await.len(), 3, "the report was applied once");
    assert_eq!(participant.received(HOTELS).len(), 1, "a 202 is not retried");
}

async fn a_task_bound_to_nobody_fails_as_unbound(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Reserve]);
    participant.script(CANCEL, vec![Reply::Json(204, Value::Null)]);
    let server = trip_server(backend, &participant, false).await;
    let id = book(&server).await;
    let done = server.finished(&id).await;
    assert_eq!(
        (done["state"].as_str(), done["data"]["flight_cancelled"].as_bool()),
        (Some("FAILED"), Some(true))
    );
    let entries = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    assert_eq!(entries["items"][2]["trigger"]["payload"]["error"]["kind"], "unbound");
    assert_eq!(participant.received(CANCEL).len(), 1);
}

async fn a_lease_outlived_by_its_attempt_is_extended_so_no_other_host_takes_it(backend: Backend) {
    let participant = Participant::start().await;
    // The attempt takes five leases' time; both hosts look for due effects every 50 ms.
    participant.script(FLIGHTS, vec![Reply::Hang(Duration::from_millis(1_500))]);
    let mut toml =
        String::from("[effects]\npoll_interval_ms = 50\nlease_ms = 300\nattempt_timeout_ms = 5000\n");
    toml.push_str(&format!("[tasks.\"flights.reserve\"]\nurl = \"{}\"\n", participant.url(FLIGHTS)));
    let server = TestServer::start_with_config(backend, &toml).await;
    server.deploy(module("trip-booking")).await.expect(201);
    let other = server.another_host().await;
    let id = book(&server).await;
    let done = other.finished(&id).await;
    // The participant answered 200 without a reservation id: the trip fails on it.
    assert_eq!(done["state"], "FAILED");
    assert_eq!(participant.received(FLIGHTS).len(), 1, "one attempt: the lease was kept for all of it");
}

async fn an_https_participant_is_reached_only_when_its_certificate_is_trusted(backend: Backend) {
    let participant = crate::support::tls::TlsParticipant::start().await;
    let ca = std::env::temp_dir().join(format!("switchyard-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca, &participant.certificate_pem).expect("the certificate file");
    let config = |trusted: bool| {
        let mut toml = String::from(
            "[effects]\npoll_interval_ms = 50\nretry = { max_attempts = 2, initial_interval_ms = 20, max_interval_ms = 50 }\n",
        );
        if trusted {
            toml.push_str(&format!("ca_certificates = [{:?}]\n", ca.display().to_string()));
        }
        for task in ["flights.reserve", "hotels.reserve"] {
            toml.push_str(&format!("[tasks.\"{task}\"]\nurl = \"{}/reserve\"\n", participant.base_url));
        }
        toml
    };
    let trusting = TestServer::start_with_config(backend, &config(true)).await;
    trusting.deploy(module("trip-booking")).await.expect(201);
    let id = book(&trusting).await;
    let done = trusting.finished(&id).await;
    assert_eq!(
        (done["state"].as_str(), done["data"]["hotel_reservation"].as_str()),
        (Some("COMPLETED"), Some("R-TLS"))
    );
    assert_eq!(participant.requests(), 2);

    // Without the certificate trusted, the handshake fails: unreachable, nothing sent.
    let wary = TestServer::start_with_config(backend, &config(false)).await;
    wary.deploy(module("trip-booking")).await.expect(201);
    let id = book(&wary).await;
    let done = wary.finished(&id).await;
    assert_eq!(done["state"], "FAILED");
    let history = wary.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let error = &history["items"][1]["trigger"]["payload"]["error"];
    assert_eq!(error["kind"], "unreachable", "{error}");
    assert!(
        error["body"].as_str().is_some_and(|body| body.to_lowercase().contains("certificate")),
        "{error}"
    );
    assert_eq!(participant.requests(), 2, "no request reached the participant");
    let _ = std::fs::remove_file(&ca);
}

async fn a_task_in_flight_survives_a_kill(backend: Backend) {
    let participant = Participant::start().await;
    // The first attempt is held past the kill; the one after the restart succeeds.
    participant.script(FLIGHTS, vec![Reply::Hang(Duration::from_secs(30)), Reply::Reserve]);
    participant.script(HOTELS, vec![Reply::Reserve]);
    let mut server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    let [held] = participant.wait_for(FLIGHTS, 1).await.try_into().expect("the first attempt");
    server.restart().await;
    let done = server.finished(&id).await;
    assert_eq!(done["state"], "COMPLETED");
    let attempts = participant.received(FLIGHTS);
    assert_eq!(attempts.len(), 2, "attempted again after the restart, not more");
    assert!(attempts.iter().all(|attempt| attempt.task_id() == held.task_id()), "under the same task_id");
    assert_eq!(participant.received(HOTELS).len(), 1, "and every later effect once");
    assert_eq!(server.steps(&id).await.len(), 3);
}

async fn bad_reports_are_refused(backend: Backend) {
    let participant = Participant::start().await;
    let server = trip_server(backend, &participant, true).await;
    let unknown = format!("/v1/tasks/{}/result", uuid::Uuid::new_v4());
    let report = json!({ "status": "succeeded", "output": {} });
    assert_problem(&server.post(&unknown, "r-1", &report).await, 404, "not-found");
    let headers = [("content-type", "application/json")];
    let malformed =
        server.request(Method::POST, &unknown, &headers, Some(b"{\"status\": \"maybe\"}".to_vec())).await;
    assert_problem(&malformed, 400, "bad-request");
}

/// A server with the hostile guest (whose `wake` sets a timer) and one instance.
async fn timer_server(backend: Backend) -> (TestServer, String) {
    let server = TestServer::start_with_config(backend, "[effects]\npoll_interval_ms = 100\n").await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let created = server.create("hostile", json!({})).await;
    (server, created["id"].as_str().expect("id").to_owned())
}

/// The instance once it reaches `revision`, waiting on long-polls (at most 30 s).
async fn at_revision(server: &TestServer, id: &str, revision: i64) -> Value {
    let path = format!("/v1/instances/{id}");
    let started = Instant::now();
    loop {
        let instance = server.get(&path).await.expect(200).json();
        if instance["revision"].as_i64() >= Some(revision) {
            return instance;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not at revision {revision} after 30 s: {instance}"
        );
        let etag = format!("\"{}\"", instance["revision"]);
        server
            .request(Method::GET, &path, &[("if-none-match", etag.as_str()), ("prefer", "wait=5")], None)
            .await;
    }
}

async fn a_timer_fires_once_after_its_delay(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    let set = server.act(&id, "wake", json!({ "key": "alarm", "after_ms": 300 })).await.expect(200).json();
    let woken = at_revision(&server, &id, 3).await;
    assert_eq!(woken["data"]["fired"], json!(["alarm"]));
    let entries = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let fired = &entries["items"][2];
    assert_eq!(
        (fired["trigger"]["kind"].as_str(), fired["trigger"]["name"].as_str()),
        (Some("effect"), Some("timer.fired"))
    );
    let at = |text: &Value| {
        time::OffsetDateTime::parse(
            text.as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("a time")
    };
    assert!(
        at(&fired["at"]) - at(&set["updated_at"]) >= time::Duration::milliseconds(300),
        "not before it was due"
    );
    // Once: a later timer fires, and the first did not fire again before it.
    server.act(&id, "wake", json!({ "key": "later", "after_ms": 100 })).await.expect(200);
    assert_eq!(at_revision(&server, &id, 5).await["data"]["fired"], json!(["alarm", "later"]));
}

async fn a_cancelled_timer_does_not_fire(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    server.act(&id, "wake", json!({ "key": "cancelled", "after_ms": 200 })).await.expect(200);
    server.act(&id, "wake", json!({ "key": "kept", "after_ms": 600 })).await.expect(200);
    server.act(&id, "snooze", json!({ "key": "cancelled" })).await.expect(200);
    // Revision 5 is the first timer to fire: the kept one, due after the cancelled one.
    let woken = at_revision(&server, &id, 5).await;
    assert_eq!(woken["data"]["fired"], json!(["kept"]));
    // A cancelled key is free again.
    server.act(&id, "wake", json!({ "key": "cancelled", "after_ms": 10 })).await.expect(200);
    assert_eq!(at_revision(&server, &id, 7).await["data"]["fired"], json!(["kept", "cancelled"]));
}

async fn a_timer_due_while_the_server_is_down_fires_after_the_restart(backend: Backend) {
    let (mut server, id) = timer_server(backend).await;
    server.act(&id, "wake", json!({ "key": "alarm", "after_ms": 300 })).await.expect(200);
    let due = Instant::now() + Duration::from_millis(300);
    server.stop().await;
    // The server stays down until the timer is due: that is the scenario, not a guess.
    tokio::time::sleep_until(due.into()).await;
    server.restart().await;
    let woken = at_revision(&server, &id, 3).await;
    assert_eq!(woken["data"]["fired"], json!(["alarm"]), "fired once, after the restart");
}

async fn post_event(server: &TestServer, id: &str, event: Value) -> crate::support::Response {
    let body = serde_json::to_vec(&event).expect("json");
    server
        .request(
            Method::POST,
            &format!("/v1/instances/{id}/events"),
            &[("content-type", "application/json")],
            Some(body),
        )
        .await
}

/// The events posted to `id`: (event_id, status, attempts).
async fn posted(server: &TestServer, id: &str) -> Vec<(String, String, u64)> {
    let events = server.get(&format!("/v1/instances/{id}/events")).await.expect(200).json();
    events["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
            (text("event_id"), text("status"), event["attempts"].as_u64().unwrap_or_default())
        })
        .collect()
}

async fn an_event_the_definition_fails_on_is_kept_and_applied_later_in_order(backend: Backend) {
    let effects =
        "[effects]\npoll_interval_ms = 50\nretry = { initial_interval_ms = 20, max_interval_ms = 50 }\n";
    // `busy` burns far more fuel than a call may use by default.
    let mut server = TestServer::start_with_config(backend, effects).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    let id = server.create("hostile", json!({})).await["id"].as_str().expect("id").to_owned();
    let busy = json!({ "event_id": "e-1", "type": "busy", "payload": { "turns": 200_000_000u64 } });
    let accepted = post_event(&server, &id, busy).await;
    assert_eq!(accepted.status, 202, "{:?}", String::from_utf8_lossy(&accepted.body));
    let accepted = accepted.json();
    assert_eq!(accepted["status"], "accepted");
    assert!(
        accepted["received"]["last_error"].as_str().is_some_and(|error| error.contains("fuel")),
        "{accepted}"
    );
    // A later event waits behind it, also accepted, rather than overtaking it.
    let ping =
        post_event(&server, &id, json!({ "event_id": "e-2", "type": "ping", "payload": { "n": 2 } })).await;
    assert_eq!(
        (ping.status.as_u16(), ping.json()["status"].as_str().map(String::from)),
        (202, Some("accepted".into()))
    );
    // Tried again while the limit holds: kept, nothing applied.
    for _ in 0..1000 {
        if posted(&server, &id).await[0].2 >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = posted(&server, &id).await;
    assert!(waiting[0].2 >= 3, "retried: {waiting:?}");
    assert_eq!((waiting[0].1.as_str(), waiting[1].1.as_str()), ("accepted", "accepted"));
    assert_eq!(server.get(&format!("/v1/instances/{id}")).await.expect(200).json()["revision"], 1);

    // An operator raises the limit: both apply, in the order received.
    server.rewrite_config(&format!("{effects}[guest]\n{}\n", crate::guest_limits::ENDLESS_FUEL));
    server.restart().await;
    let done = server
        .wait_until(&id, |instance| {
            instance["data"]["pings"].as_array().is_some_and(|pings| pings.len() == 2)
        })
        .await;
    assert_eq!(done["data"]["pings"], json!([{ "turns": 200_000_000u64 }, { "n": 2 }]));
    let names: Vec<String> = server.steps(&id).await.into_iter().skip(1).map(|(_, name, _)| name).collect();
    assert_eq!(names, ["busy", "ping"]);
    let applied = posted(&server, &id).await;
    assert_eq!((applied[0].1.as_str(), applied[1].1.as_str()), ("applied", "applied"));
}

async fn events_apply_once_per_event_id_in_the_order_received(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    for n in 0..5 {
        let posted = post_event(
            &server,
            &id,
            json!({ "event_id": format!("e{n}"), "type": "ping", "payload": { "n": n } }),
        )
        .await;
        let posted = posted.expect(200).json();
        assert_eq!(
            (posted["status"].as_str(), posted["instance"]["revision"].as_i64()),
            (Some("applied"), Some(n + 2))
        );
    }
    // A vendor retrying: the same id answers 2xx, and applies nothing.
    let again =
        post_event(&server, &id, json!({ "event_id": "e0", "type": "ping", "payload": { "n": 99 } })).await;
    let again = again.expect(200).json();
    assert_eq!(
        (again["status"].as_str(), again["received"]["status"].as_str()),
        (Some("duplicate"), Some("applied"))
    );
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(
        instance["data"]["pings"],
        json!([{ "n": 0 }, { "n": 1 }, { "n": 2 }, { "n": 3 }, { "n": 4 }])
    );
    let listed = server.get(&format!("/v1/instances/{id}/events")).await.expect(200).json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|event| event["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(
        (listed["items"][0]["status"].as_str(), listed["items"][0]["seq"].as_i64()),
        (Some("applied"), Some(2))
    );
    let entries = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    let entry = &entries["items"][1]["trigger"];
    assert_eq!(
        (entry["kind"].as_str(), entry["name"].as_str(), entry["id"].as_str()),
        (Some("event"), Some("ping"), Some("e0"))
    );
}

async fn a_refused_event_is_kept_and_changes_nothing(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    let refused =
        post_event(&server, &id, json!({ "event_id": "x1", "type": "payment.settled", "payload": {} })).await;
    let refused = refused.expect(200).json();
    assert_eq!(
        (refused["status"].as_str(), refused["code"].as_str()),
        (Some("refused"), Some("unexpected_event"))
    );
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 1, "nothing changed");
    let listed = server.get(&format!("/v1/instances/{id}/events")).await.expect(200).json();
    assert_eq!(
        (listed["items"][0]["status"].as_str(), listed["items"][0]["code"].as_str()),
        (Some("refused"), Some("unexpected_event"))
    );
    let again = post_event(&server, &id, json!({ "event_id": "x1", "type": "payment.settled" }))
        .await
        .expect(200)
        .json();
    assert_eq!(
        (again["status"].as_str(), again["received"]["status"].as_str()),
        (Some("duplicate"), Some("refused"))
    );
}

async fn malformed_events_are_refused(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    let cases = [
        (
            json!({ "event_id": "t1", "type": "timer.fired", "payload": { "key": "alarm" } }),
            422,
            "invalid-event",
        ),
        (json!({ "event_id": "", "type": "ping" }), 422, "invalid-event"),
        (json!({ "event_id": "bad id", "type": "ping" }), 422, "invalid-event"),
        (json!({ "event_id": "t2", "type": "has space" }), 422, "invalid-event"),
        (json!({ "type": "ping" }), 400, "bad-request"),
        (json!({ "event_id": "t3", "type": "ping", "extra": 1 }), 400, "bad-request"),
    ];
    for (event, status, kind) in cases {
        assert_problem(&post_event(&server, &id, event).await, status, kind);
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_problem(
        &post_event(&server, &unknown, json!({ "event_id": "u", "type": "ping" })).await,
        404,
        "not-found",
    );
    assert_problem(&server.get(&format!("/v1/instances/{unknown}/events")).await, 404, "not-found");
    let listed = server.get(&format!("/v1/instances/{id}/events")).await.expect(200).json();
    assert_eq!(listed["items"], json!([]), "nothing was kept");
    assert_eq!(server.get(&format!("/v1/instances/{id}")).await.expect(200).json()["revision"], 1);
}

async fn a_child_starts_once_and_its_end_reaches_its_parent(backend: Backend) {
    let (server, parent) = timer_server(backend).await;
    let spawn = json!({ "key": "kid", "definition": "hostile", "input": { "n": 1 } });
    server.act(&parent, "spawn", spawn).await.expect(200);
    let children_path = format!("/v1/instances?parent={parent}");
    let mut children = Vec::new();
    for _ in 0..1000 {
        children = server.get(&children_path).await.expect(200).json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !children.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [child] = children.try_into().expect("one child");
    let child_id = child["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (child["parent_id"].as_str(), &child["data"]["input"]),
        (Some(parent.as_str()), &json!({ "n": 1 }))
    );
    let diagnostics = server.get(&format!("/v1/instances/{parent}/diagnostics")).await.expect(200).json();
    let effect = &diagnostics["children"][0];
    assert_eq!(
        (effect["status"].as_str(), effect["key"].as_str()),
        (Some("waiting"), Some("kid")),
        "{effect}"
    );

    server.act(&child_id, "finish", Value::Null).await.expect(200);
    let after = at_revision(&server, &parent, 3).await;
    let ended = json!([{ "key": "kid", "child_id": child_id, "status": "Completed", "state": "DONE" }]);
    assert_eq!(after["data"]["children"], ended);
    assert_eq!(server.steps(&parent).await[2], step("effect", "child.completed", "IDLE"));
    let diagnostics = server.get(&format!("/v1/instances/{parent}/diagnostics")).await.expect(200).json();
    assert_eq!(diagnostics["children"][0]["status"], "done");
    let listed = server.get(&children_path).await.expect(200).json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "started once");
    assert_problem(&server.get("/v1/instances?parent=nonsense").await, 400, "bad-request");
}

async fn a_child_that_cannot_start_reaches_its_parent_as_failed(backend: Backend) {
    let (server, parent) = timer_server(backend).await;
    let spawn = json!({ "key": "ghost", "definition": "nothing-deployed", "input": {} });
    server.act(&parent, "spawn", spawn).await.expect(200);
    let after = at_revision(&server, &parent, 3).await;
    let ended = &after["data"]["children"][0];
    assert_eq!(
        (ended["key"].as_str(), ended["status"].as_str(), ended["child_id"].as_str()),
        (Some("ghost"), Some("Failed"), Some(""))
    );
    assert_eq!(server.steps(&parent).await[2], step("effect", "child.failed", "IDLE"));
}

/// Spawns a `hostile` child of `parent` and returns its id once it is started.
async fn spawned_child(server: &TestServer, parent: &str) -> String {
    server
        .act(parent, "spawn", json!({ "key": "kid", "definition": "hostile", "input": {} }))
        .await
        .expect(200);
    let children_path = format!("/v1/instances?parent={parent}");
    for _ in 0..1000 {
        let child = server.get(&children_path).await.expect(200).json()["items"][0].clone();
        if let Some(id) = child["id"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the child did not start within 10 s");
}

async fn children_left_running_under_a_cancelled_parent_are_cancelled_on_start(backend: Backend) {
    let (mut server, parent) = timer_server(backend).await;
    let child = spawned_child(&server, &parent).await;
    server.stop().await;
    // What a crash right after the parent's cancel committed leaves: the parent
    // cancelled, its child still running.
    let sql = "UPDATE instances SET state = 'CANCELLED', status = 'cancelled' WHERE id = $1";
    assert_eq!(server.execute_sql(sql, &parent).await, 1);
    let closed = "UPDATE effects SET status = 'cancelled' WHERE instance_id = $1 AND kind = 'child'";
    assert_eq!(server.execute_sql(closed, &parent).await, 1, "the cancel closed the child effect");
    let running = "UPDATE instances SET updated_at = updated_at WHERE id = $1 AND status = 'running'";
    assert_eq!(server.execute_sql(running, &child).await, 1, "the child is still running");
    server.start_again().await;
    let done = server.finished(&child).await;
    assert_eq!((done["state"].as_str(), done["status"].as_str()), (Some("CANCELLED"), Some("cancelled")));
    let entries = server.get(&format!("/v1/instances/{child}/history")).await.expect(200).json();
    let last = entries["items"].as_array().and_then(|items| items.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["trigger"]["name"].as_str(), last["actor"].as_str()),
        (Some("cancel"), Some("switchyard"))
    );
    assert_eq!(last["trigger"]["payload"]["reason"], format!("its parent {parent} was cancelled"));
}

async fn an_admin_cancel_closes_open_effects_and_cancels_children(backend: Backend) {
    let (server, parent) = timer_server(backend).await;
    server.act(&parent, "wake", json!({ "key": "alarm", "after_ms": 60_000 })).await.expect(200);
    let child_id = spawned_child(&server, &parent).await;
    // The child's own open timer is closed too when it is cancelled.
    server.act(&child_id, "wake", json!({ "key": "nap", "after_ms": 60_000 })).await.expect(200);

    let cancelled =
        server.admin(&parent, "cancel", json!({ "reason": "customer left" })).await.expect(200).json();
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["status"].as_str()),
        (Some("CANCELLED"), Some("cancelled"))
    );
    let entries = server.get(&format!("/v1/instances/{parent}/history")).await.expect(200).json();
    let last = entries["items"].as_array().and_then(|items| items.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["trigger"]["kind"].as_str(), last["trigger"]["name"].as_str()),
        (Some("admin"), Some("cancel"))
    );
    assert_eq!(
        (last["trigger"]["payload"]["reason"].as_str(), last["actor"].as_str()),
        (Some("customer left"), Some("anonymous"))
    );
    let child_now = server.finished(&child_id).await;
    assert_eq!(
        (child_now["state"].as_str(), child_now["status"].as_str()),
        (Some("CANCELLED"), Some("cancelled"))
    );
    for id in [&parent, &child_id] {
        let diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
        let statuses: Vec<&str> = diagnostics["effects"]
            .as_array()
            .expect("effects")
            .iter()
            .filter_map(|effect| effect["status"].as_str())
            .collect();
        assert!(statuses.iter().all(|status| *status == "cancelled"), "{id}: {statuses:?}");
        assert_eq!(diagnostics["open_timers"], json!([]));
    }
    assert_problem(
        &server.admin(&parent, "cancel", json!({ "reason": "again" })).await,
        409,
        "instance-finished",
    );
}

async fn an_override_goes_through_the_definition(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(FLIGHTS, vec![Reply::Hang(Duration::from_secs(30))]);
    let server = trip_server(backend, &participant, true).await;
    let id = book(&server).await;
    participant.wait_for(FLIGHTS, 1).await;
    // trip-booking keeps the SDK's default: force-complete moves to its completed state.
    let forced = server.admin(&id, "force-complete", json!({ "reason": "skip it" })).await;
    let forced = forced.expect(200).json();
    assert_eq!(forced["status"], "completed", "the SDK's default moves to the completed state");
    assert_problem(&server.admin(&id, "cancel", json!({ "reason": " " })).await, 400, "bad-request");
    assert_problem(
        &server.admin(&uuid::Uuid::new_v4().to_string(), "cancel", json!({ "reason": "x" })).await,
        404,
        "not-found",
    );
    let (hostile, hostile_id) = timer_server(backend).await;
    let done =
        hostile.admin(&hostile_id, "force-complete", json!({ "reason": "enough" })).await.expect(200).json();
    assert_eq!(
        (done["state"].as_str(), done["message"].as_str()),
        (Some("DONE"), Some("completed by an admin: enough"))
    );
}

/// The callback secret of [`callback_server`] (the Standard Webhooks example's).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HOOK: &str = "/hook";

/// A server that signs callbacks and may call loopback, with the hostile guest.
async fn callback_server(backend: Backend) -> TestServer {
    let toml = format!(
        "[effects]\npoll_interval_ms = 100\n[callbacks]\nsecret = \"{SECRET}\"\nallow_private = true\n\
         max_attempts = 3\ninitial_interval_ms = 20\nmax_interval_ms = 50\n"
    );
    let server = TestServer::start_with_config(backend, &toml).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    server
}

async fn create_with_callback(server: &TestServer, url: &str) -> crate::support::Response {
    let key = uuid::Uuid::new_v4().to_string();
    server.post("/v1/definitions/hostile/instances", &key, &json!({ "input": {}, "callback_url": url })).await
}

/// The instance's callback effect, once it is closed (at most 30 s).
async fn delivered_callback(server: &TestServer, id: &str) -> Value {
    for _ in 0..3000 {
        let diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
        let callback = diagnostics["callback_deliveries"][0].clone();
        if callback["status"] == "done" {
            return callback;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the callback of {id} was not closed within 30 s");
}

async fn a_terminal_callback_is_signed_and_retried_until_delivered(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(HOOK, vec![Reply::Json(500, json!({})), Reply::Json(200, json!({}))]);
    let server = callback_server(backend).await;
    let created = create_with_callback(&server, &participant.url(HOOK)).await.expect(201).json();
    let id = created["id"].as_str().expect("id").to_owned();
    server.act(&id, "finish", Value::Null).await.expect(200);
    let [first, second] = participant.wait_for(HOOK, 2).await.try_into().expect("two attempts");
    let finished = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    let verifier = standardwebhooks::Webhook::new(SECRET).expect("the secret");
    for attempt in [&first, &second] {
        assert_eq!(attempt.body, finished, "the callback carries the instance as GET shows it");
        verifier
            .verify(&attempt.raw, &attempt.headers)
            .expect("an independent verifier accepts the signature");
    }
    let id_of = |attempt: &crate::support::participant::Received| attempt.headers.get("webhook-id").cloned();
    assert_eq!(id_of(&first), id_of(&second), "one webhook-id across retries");
    let callback = delivered_callback(&server, &id).await;
    assert_eq!(
        (callback["attempts"].as_u64(), callback["result"]["delivered"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(callback["last_error"].as_str().is_some_and(|error| error.contains("500")), "{callback}");
}

async fn a_callback_answered_410_is_not_retried(backend: Backend) {
    let participant = Participant::start().await;
    participant.script(HOOK, vec![Reply::Json(410, json!({}))]);
    let server = callback_server(backend).await;
    let created = create_with_callback(&server, &participant.url(HOOK)).await.expect(201).json();
    let id = created["id"].as_str().expect("id").to_owned();
    server.act(&id, "finish", Value::Null).await.expect(200);
    let callback = delivered_callback(&server, &id).await;
    assert_eq!(
        (callback["attempts"].as_u64(), callback["result"]["delivered"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(participant.received(HOOK).len(), 1);
}

async fn callback_urls_into_private_networks_are_refused(backend: Backend) {
    let toml = format!("[callbacks]\nsecret = \"{SECRET}\"\n");
    let server = TestServer::start_with_config(backend, &toml).await;
    server.deploy(module("hostile-guest")).await.expect(201);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "http://localhost/x",
    ] {
        let refused = create_with_callback(&server, url).await;
        let problem = assert_problem(&refused, 422, "invalid-callback");
        assert!(
            problem["detail"].as_str().is_some_and(|detail| detail.contains("address")),
            "{url}: {problem}"
        );
    }
    let unsigned = TestServer::start(backend).await;
    unsigned.deploy(module("hostile-guest")).await.expect(201);
    let problem = assert_problem(
        &create_with_callback(&unsigned, "https://example.com/hook").await,
        422,
        "invalid-callback",
    );
    assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("secret")), "{problem}");
    assert_eq!(server.get("/v1/instances").await.expect(200).json()["items"], json!([]), "nothing created");
}

async fn bad_effects_are_refused_and_change_nothing(backend: Backend) {
    let (server, id) = timer_server(backend).await;
    server.act(&id, "wake", json!({ "key": "alarm", "after_ms": 60_000 })).await.expect(200);
    let cases = [
        ("twin-timers", Value::Null, "effect key \"twin\" is used by another open effect"),
        ("blank-key", Value::Null, "effect key \"\" is not valid"),
        ("effect-not-json", Value::Null, "the input of effect \"t\" is not JSON"),
        ("wake", json!({ "key": "alarm", "after_ms": 5 }), "is used by another open effect of the instance"),
        (
            "spawn",
            json!({ "key": "c", "definition": "Not A Name", "input": {} }),
            "is not a valid task or definition name",
        ),
    ];
    for (action, payload, reason) in cases {
        let refused = server.act(&id, action, payload).await;
        let problem = assert_problem(&refused, 500, "definition-failed");
        assert!(
            problem["detail"].as_str().is_some_and(|detail| detail.contains(reason)),
            "{action}: {problem}"
        );
    }
    let instance = server.get(&format!("/v1/instances/{id}")).await.expect(200).json();
    assert_eq!(instance["revision"], 2, "nothing was applied");
    let diagnostics = server.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
    assert_eq!(
        diagnostics["effects"].as_array().map(Vec::len),
        Some(1),
        "only the first timer: {diagnostics}"
    );
}
