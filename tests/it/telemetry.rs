//! What the server tells of its work: Prometheus metrics at `/metrics`, and log lines
//! that name the request and the instance.

use crate::effects::trip_waiting_for_its_hotel;
use crate::support::{Backend, TestServer, module};
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(
    metrics_count_requests_transitions_effects_and_commits,
    json_logs_name_the_request_and_its_instance
);

async fn metrics_count_requests_transitions_effects_and_commits(backend: Backend) {
    let (_participant, server, id, hotel) = trip_waiting_for_its_hotel(backend).await;
    // The hotel's task waits for its report: one effect is open.
    server.wait_for_metric("switchyard_outbox_depth", |open| open == 1.0).await;
    let path = hotel.body["report_url"].as_str().expect("report_url").replace(&server.base_url, "");
    let report = json!({ "status": "succeeded", "output": { "reservation_id": "H-1" } });
    server.post(&path, "report", &report).await.expect(200);
    server.finished(&id).await;
    assert_eq!(server.metric("switchyard_outbox_depth").await, 0.0);
    assert_eq!(server.metric("switchyard_outbox_oldest_age_seconds").await, 0.0, "nothing is overdue");

    let committed = |trigger| {
        [("definition", "trip-booking"), ("version", "1"), ("trigger", trigger), ("outcome", "committed")]
    };
    assert_eq!(server.metric_where("switchyard_transitions_total", &committed("start")).await, 1.0);
    let effects = server.metric_where("switchyard_transitions_total", &committed("effect")).await;
    assert_eq!(effects, 2.0, "the flight's result, then the hotel's");
    let tasks = [("kind", "task"), ("outcome", "task.succeeded")];
    assert_eq!(server.metric_where("switchyard_effects_total", &tasks).await, 2.0);
    assert_eq!(server.metric_where("switchyard_effect_attempts_total", &[("kind", "task")]).await, 2.0);

    // A request replayed under its key is counted as a request and as a replay, not as
    // a transition.
    server.deploy(module("document-processing")).await.expect(201);
    let path = "/v1/definitions/document-processing/instances";
    let input = json!({ "input": { "document_url": "s3://docs/report.pdf" } });
    server.post(path, "same-key", &input).await.expect(201);
    server.post(path, "same-key", &input).await.expect(201);
    assert_eq!(server.metric("switchyard_idempotency_replays_total").await, 1.0);
    let answered = [("method", "POST"), ("route", "/v1/definitions/{name}/instances"), ("status", "201")];
    let trip_and_two = server.metric_where("switchyard_http_requests_total", &answered).await;
    assert_eq!(trip_and_two, 3.0, "the trip's start, and these two");
    let started = [("definition", "document-processing"), ("trigger", "start"), ("outcome", "committed")];
    assert_eq!(server.metric_where("switchyard_transitions_total", &started).await, 1.0);
    server.get("/no/such/path").await.expect(404);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(server.metric_where("switchyard_http_requests_total", &unmatched).await, 1.0);

    // Histograms, with their buckets.
    let text = String::from_utf8(server.get("/metrics").await.expect(200).body).expect("utf-8");
    for histogram in [
        "switchyard_http_request_duration_seconds",
        "switchyard_guest_call_fuel",
        "switchyard_guest_call_duration_seconds",
        "switchyard_commit_batch_size",
        "switchyard_commit_duration_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {histogram} histogram")), "{histogram}:\n{text}");
        assert!(text.contains(&format!("{histogram}_bucket{{")), "{histogram} has buckets:\n{text}");
    }
    let fuel = server.metric("switchyard_guest_call_fuel_count").await;
    assert!(fuel >= 4.0, "two inits and two results at least: {fuel}\n{text}");
    let committed = server.metric("switchyard_commit_batch_size_sum").await;
    assert!(committed >= 4.0, "{committed}\n{text}");
    assert!(server.metric("switchyard_module_cache_hits_total").await >= 1.0);
}

async fn json_logs_name_the_request_and_its_instance(backend: Backend) {
    let server = TestServer::start_with(backend, &["--log-format", "json"]).await;
    server.deploy(module("document-processing")).await.expect(201);
    let input = json!({ "input": { "document_url": "s3://docs/report.pdf" } });
    let body = serde_json::to_vec(&input).expect("json");
    let headers =
        [("idempotency-key", "k1"), ("content-type", "application/json"), ("x-correlation-id", "corr-start")];
    let created =
        server.request(Method::POST, "/v1/definitions/document-processing/instances", &headers, Some(body));
    let id = created.await.expect(201).json()["id"].as_str().expect("id").to_owned();
    let headers = [("idempotency-key", "k2"), ("x-correlation-id", "corr-act")];
    let path = format!("/v1/instances/{id}/actions/validate");
    server.request(Method::POST, &path, &headers, None).await.expect(200);

    let ended = |log: &str| log.lines().any(|line| line.contains("corr-act") && line.contains("\"request\""));
    let lines: Vec<Value> = server
        .wait_for_log(ended)
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    for (correlation_id, route) in [
        ("corr-start", "/v1/definitions/{name}/instances"),
        ("corr-act", "/v1/instances/{id}/actions/{action}"),
    ] {
        let of_request: Vec<&Value> =
            lines.iter().filter(|line| line["span"]["correlation_id"] == correlation_id).collect();
        let ends: Vec<&&Value> =
            of_request.iter().filter(|line| line["fields"]["message"] == "request").collect();
        let [end] = ends.as_slice() else { panic!("one line ends {correlation_id}: {of_request:#?}") };
        assert_eq!((end["level"].as_str(), end["fields"]["route"].as_str()), (Some("INFO"), Some(route)));
        assert_eq!(end["span"]["instance_id"], id.as_str(), "{end}");
    }
    // Every line of a request about an instance names it.
    for line in lines.iter().filter(|line| line["span"]["correlation_id"] == "corr-act") {
        assert_eq!(line["span"]["instance_id"], id.as_str(), "{line}");
    }
}
