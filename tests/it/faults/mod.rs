//! Many hosts on one PostgreSQL database under faults (SPEC §5): hosts killed with
//! `-9` and restarted, the database going away and coming back, a slow and flaky
//! network between hosts and database — all while orders start children, trips and
//! payments run tasks, payments wait on timers and documents take client actions.
//!
//! Clients send every request with an `Idempotency-Key` and, when no answer comes (a
//! refused connection, a lost answer, a 5xx), send it again with the same key to
//! another host. Once every instance has finished, [`audit`] reads the history and
//! the effects of every instance and the stub's ledger, and each test prints one line
//! of [`Figures`] and holds them to the promises: no acknowledged transition lost,
//! none applied twice, every task delivered under exactly one `task_id`, every timer
//! fired once.
//!
//! PostgreSQL only: SQLite is one process. A run is reproducible in its choices (not
//! in its timing) with `SWITCHYARD_FAULTS_SEED`, which each test prints.

mod database;
mod kill;
mod restart;

use crate::support::{TestServer, module, postgres_server};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_stub::{Fault, Stub};
use tokio::task::JoinHandle;

const DEFINITIONS: [&str; 7] = [
    "order-fulfilment",
    "order-payment",
    "order-inventory",
    "order-shipment",
    "trip-booking",
    "payment-routing",
    "document-processing",
];

/// Short leases and polls, so that a dead host's effects are taken over within about
/// a second; quick task retries, so that a host that lost its database tries again soon.
fn config(stub: &Stub) -> String {
    format!(
        "[effects]\nlease_ms = 1000\npoll_interval_ms = 100\nattempt_timeout_ms = 2000\n\
         retry = {{ max_attempts = 20, initial_interval_ms = 50, max_interval_ms = 200 }}\n{}",
        stub.bindings()
    )
}

/// Hosts on one database with every example task bound to one stub. When a test
/// fails, the hosts' logs are kept (see [`Cluster::keep_logs`]).
#[derive(Debug)]
struct Cluster {
    test: &'static str,
    hosts: Vec<TestServer>,
    stub: Stub,
}

impl Cluster {
    /// `count` hosts on a new database, each reaching PostgreSQL at `route(url)`.
    async fn start(test: &'static str, count: usize, route: impl FnOnce(&str) -> String) -> Cluster {
        Cluster::start_on(test, count, &postgres_server(), route).await
    }

    /// [`Cluster::start`] on the PostgreSQL server at `postgres` (a private one, say).
    async fn start_on(
        test: &'static str,
        count: usize,
        postgres: &str,
        route: impl FnOnce(&str) -> String,
    ) -> Cluster {
        let stub = Stub::start(([127, 0, 0, 1], 0).into(), Duration::from_millis(20)).await.expect("stub");
        // Alpha charges, then answers too late: every US payment's charge is in doubt,
        // and the payment waits on a timer before it asks alpha for the charge's status.
        stub.fault("gateway.alpha.charge", Fault::ActThenHang { ms: 400 });
        let first = TestServer::start_routed(postgres, &config(&stub), route).await;
        for definition in DEFINITIONS {
            first.deploy(module(definition)).await.expect(201);
        }
        let mut hosts = vec![first];
        for _ in 1..count {
            let host = hosts[0].another_host().await;
            hosts.push(host);
        }
        Cluster { test, hosts, stub }
    }

    /// Writes every host's log to `SWITCHYARD_FAULTS_LOGS` (a folder), or to a folder
    /// under the system's temporary one, for a person reading what the hosts did.
    fn keep_logs(&self) {
        let folder = std::env::var_os("SWITCHYARD_FAULTS_LOGS")
            .map_or_else(|| std::env::temp_dir().join("switchyard-faults"), std::path::PathBuf::from);
        if std::fs::create_dir_all(&folder).is_err() {
            return;
        }
        for (n, host) in self.hosts.iter().enumerate() {
            let path = folder.join(format!("{}-host-{n}.log", self.test));
            if std::fs::write(&path, host.log()).is_ok() {
                eprintln!("faults: {} host {n} logged to {}", self.test, path.display());
            }
        }
    }

    fn urls(&self) -> Vec<String> {
        self.hosts.iter().map(|host| host.base_url.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SWITCHYARD_FAULTS_LOGS").is_some() {
            self.keep_logs();
        }
    }
}

/// A small seeded random source (xorshift64*): the test's choices, reproducible.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("SWITCHYARD_FAULTS_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                u64::try_from(now.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
            });
        println!("faults: {test} seed={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (at least 1).
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// Another source, seeded from this one.
    fn fork(&mut self) -> Rng {
        Rng(self.next() | 1)
    }
}

/// A request a host acknowledged: the key it was sent with and where it applies.
#[derive(Debug, Clone)]
struct Ack {
    instance: String,
    key: String,
    /// `start`, or the action's name.
    what: String,
}

/// Clients that send each request until a host acknowledges it, moving to the next
/// host after each failure, and keep what was acknowledged.
#[derive(Debug, Clone)]
struct Clients {
    urls: Arc<Vec<String>>,
    http: reqwest::Client,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// Requests sent and not answered yet.
    in_flight: Arc<AtomicUsize>,
    /// Requests that got no acknowledgement: sent again.
    unanswered: Arc<AtomicUsize>,
    /// Of those, the ones a host answered with a 5xx.
    server_errors: Arc<AtomicUsize>,
}

/// How long a client keeps sending one request: longer than any outage the tests
/// cause, and than a host's restart.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

impl Clients {
    fn new(urls: Vec<String>) -> Clients {
        Clients::waiting(urls, Duration::from_secs(10))
    }

    /// Clients that wait at most `timeout` for an answer before sending again.
    fn waiting(urls: Vec<String>, timeout: Duration) -> Clients {
        Clients {
            urls: Arc::new(urls),
            http: reqwest::Client::builder().timeout(timeout).build().expect("client"),
            acks: Arc::default(),
            in_flight: Arc::default(),
            unanswered: Arc::default(),
            server_errors: Arc::default(),
        }
    }

    /// POSTs `body` with `key`, starting at host `first`, until a host acknowledges it
    /// (200 or 201); what it answered.
    async fn send(&self, first: usize, path: &str, key: &str, body: &Value) -> Value {
        let (mut last, started) = (String::new(), Instant::now());
        for attempt in 0.. {
            if started.elapsed() > GIVE_UP_AFTER {
                break;
            }
            let url = &self.urls[(first + attempt) % self.urls.len()];
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let sent =
                self.http.post(format!("{url}{path}")).header("idempotency-key", key).json(body).send().await;
            let answer = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.bytes().await.map(|body| body.to_vec()))
                }
                Err(err) => (0, Err(err)),
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match answer {
                (200 | 201, Ok(body)) => {
                    return serde_json::from_slice(&body).expect("an acknowledgement is JSON");
                }
                (status, Ok(body)) if retryable(status, &body) => {
                    if status >= 500 {
                        self.server_errors.fetch_add(1, Ordering::SeqCst);
                    }
                    last = format!("{status} {}", String::from_utf8_lossy(&body));
                }
                (status, Ok(body)) => {
                    panic!("{path} ({key}) answered {status}: {}", String::from_utf8_lossy(&body))
                }
                (_, Err(err)) => last = err.to_string(),
            }
            self.unanswered.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} ({key}) was not acknowledged within {GIVE_UP_AFTER:?}; last: {last}");
    }

    fn acknowledged(&self, instance: &str, key: &str, what: &str) {
        let ack = Ack { instance: instance.into(), key: key.into(), what: what.into() };
        lock(&self.acks).push(ack);
    }

    fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    fn acked(&self) -> usize {
        lock(&self.acks).len()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }

    fn server_errors(&self) -> usize {
        self.server_errors.load(Ordering::SeqCst)
    }
}

/// Whether a client sends a request again: the server failed, or the same key is
/// still being worked on (an earlier attempt whose answer was lost).
fn retryable(status: u16, body: &[u8]) -> bool {
    let kind = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|problem| problem["type"].as_str().map(String::from));
    status >= 500
        || (status == 409
            && matches!(
                kind.as_deref(),
                Some("urn:switchyard:problem:idempotency-key-in-use" | "urn:switchyard:problem:contention")
            ))
}

/// What a unit of load starts, and how it ends when nothing fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `order-fulfilment`: three children, each a task.
    Order,
    /// `trip-booking`: two tasks.
    Trip,
    /// `payment-routing`: timers and tasks (a US payment's charge is in doubt, so it
    /// also waits on a poll timer and asks for the charge's status).
    Payment,
    /// `document-processing`: three client actions.
    Document,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Order, Kind::Payment, Kind::Document, Kind::Trip];

    fn definition(self) -> &'static str {
        match self {
            Kind::Order => "order-fulfilment",
            Kind::Trip => "trip-booking",
            Kind::Payment => "payment-routing",
            Kind::Document => "document-processing",
        }
    }

    fn input(self, n: usize) -> Value {
        match self {
            Kind::Order => json!({
                "order_id": format!("O-{n}"),
                "amount": 10 + n,
                "items": [{ "sku": "A-1", "qty": 1 + n % 3 }],
                "address": { "city": "Lisbon" },
            }),
            Kind::Trip => {
                json!({ "trip_id": format!("T-{n}"), "flight": { "to": "LIS" }, "hotel": { "nights": 2 } })
            }
            Kind::Payment => json!({
                "payment_id": format!("P-{n}"),
                "amount": 25,
                "currency": "EUR",
                // Every other payment: the kinds take turns, so `n` alone would pick one region.
                "region": if (n / Kind::ALL.len()).is_multiple_of(2) { "US" } else { "EU" },
                "poll_interval_ms": 50,
                "max_polls": 50,
                "charge_timeout_ms": 150,
            }),
            Kind::Document => json!({ "document_url": format!("s3://doc-{n}") }),
        }
    }

    /// The state it ends in when nothing failed.
    fn done(self) -> &'static str {
        match self {
            Kind::Order => "FULFILLED",
            Kind::Trip | Kind::Payment => "COMPLETED",
            Kind::Document => "PUBLISHED",
        }
    }
}

/// One started unit: its root instance.
#[derive(Debug, Clone)]
struct Unit {
    kind: Kind,
    id: String,
}

/// Units of load running as tasks of the test, each a client of its own.
#[derive(Debug)]
struct Load {
    clients: Clients,
    running: Vec<JoinHandle<Unit>>,
    launched: usize,
    rng: Rng,
}

impl Load {
    fn new(cluster: &Cluster, rng: Rng) -> Load {
        Load::with(Clients::new(cluster.urls()), rng)
    }

    fn with(clients: Clients, rng: Rng) -> Load {
        Load { clients, running: Vec::new(), launched: 0, rng }
    }

    /// Starts `count` more units, of every kind in turn, each at a random host.
    fn launch(&mut self, count: usize) {
        for _ in 0..count {
            let n = self.launched;
            self.launched += 1;
            let kind = Kind::ALL[n % Kind::ALL.len()];
            let first = self.rng.below(self.clients.urls.len());
            self.running.push(tokio::spawn(run_unit(self.clients.clone(), kind, n, first)));
        }
    }

    /// Waits until `count` requests were acknowledged in all (at most 30 s).
    async fn wait_acked(&self, count: usize) {
        let what = format!("{count} requests acknowledged");
        wait_for(&what, || self.clients.acked() >= count).await;
    }

    /// Waits until every unit's requests were acknowledged.
    async fn finish(&mut self) -> Vec<Unit> {
        let mut units = Vec::new();
        for unit in self.running.drain(..) {
            units.push(
                tokio::time::timeout(Duration::from_secs(60), unit)
                    .await
                    .expect("a unit within 60 s")
                    .expect("a unit"),
            );
        }
        units
    }
}

/// Starts one instance and, for a document, takes it through its actions; every
/// request at host `first` first.
async fn run_unit(clients: Clients, kind: Kind, n: usize, first: usize) -> Unit {
    let key = format!("{}-{n}", kind.definition());
    let path = format!("/v1/definitions/{}/instances", kind.definition());
    let created = clients.send(first, &path, &key, &json!({ "input": kind.input(n) })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    clients.acknowledged(&id, &key, "start");
    if kind == Kind::Document {
        for (step, action) in ["validate", "format", "publish"].into_iter().enumerate() {
            let key = format!("{key}-{action}");
            let path = format!("/v1/instances/{id}/actions/{action}");
            clients.send(first + step + 1, &path, &key, &json!({})).await;
            clients.acknowledged(&id, &key, action);
        }
    }
    Unit { kind, id }
}

/// Every instance in the database (children included), newest first.
async fn all_instances(reader: &TestServer, filter: &str) -> Vec<Value> {
    let mut instances = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page = reader.get(&format!("/v1/instances?limit=500{filter}{cursor}")).await.expect(200).json();
        instances.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return instances,
        }
    }
    panic!("more than 100 pages of instances");
}

fn is_open(effect: &Value) -> bool {
    matches!(effect["status"].as_str(), Some("pending" | "waiting" | "ready"))
}

/// The open effects in the database, as (instance id, effect id): read in one query,
/// so that the snapshot is of one moment.
async fn open_effects(reader: &TestServer) -> HashSet<(String, String)> {
    let sql = "SELECT instance_id || ' ' || id FROM effects \
               WHERE status IN ('pending', 'waiting', 'ready') AND $1 = $1";
    let rows = reader.query_texts(sql, "").await;
    rows.iter()
        .filter_map(|row| row.split_once(' '))
        .map(|(instance, effect)| (instance.to_owned(), effect.to_owned()))
        .collect()
}

/// Waits until none of `open` is open any more (at most 30 s); how long that took.
async fn closed(reader: &TestServer, mut open: HashSet<(String, String)>, since: Instant) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let instances: HashSet<String> = open.iter().map(|(instance, _)| instance.clone()).collect();
        for instance in instances {
            let diagnostics =
                reader.get(&format!("/v1/instances/{instance}/diagnostics")).await.expect(200).json();
            let still: HashSet<&str> = diagnostics["effects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|effect| is_open(effect))
                .filter_map(|effect| effect["id"].as_str())
                .collect();
            open.retain(|(of, effect)| *of != instance || still.contains(effect.as_str()));
        }
        if open.is_empty() {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What is stuck, and the children of its instance (for a child effect).
    let mut stuck = Vec::new();
    for (instance, effect) in &open {
        let diagnostics =
            reader.get(&format!("/v1/instances/{instance}/diagnostics")).await.expect(200).json();
        let effects = diagnostics["effects"].as_array().cloned().unwrap_or_default();
        stuck.extend(effects.into_iter().filter(|candidate| candidate["id"] == effect.as_str()));
        let children = all_instances(reader, &format!("&parent={instance}")).await;
        let children: Vec<String> = children
            .iter()
            .map(|child| {
                format!("{} {} {} {}", child["id"], child["definition"], child["status"], child["state"])
            })
            .collect();
        stuck.push(json!({ "instance": instance, "children": children }));
    }
    panic!("effects still open 30 s after the fault: {stuck:#?}");
}

/// What a run under faults did, and what it broke.
#[derive(Debug, Default)]
struct Figures {
    instances: usize,
    acknowledged: usize,
    /// Acknowledged requests with no history entry.
    lost: usize,
    /// History entries of one trigger (a key, an effect's result) beyond the first,
    /// and instances started beyond one per key.
    doubled: usize,
    /// Task effects.
    tasks: usize,
    /// Every task reached the stub under its effect's id only, and no two effects
    /// share an id.
    task_ids_unique: bool,
    timers: usize,
    /// Every timer that fired did so once, and every one not cancelled fired.
    timers_fired_once: bool,
    /// Children started once per child effect.
    children: usize,
    children_once: bool,
    /// Instances that did not end as they do when nothing fails.
    wrong_ends: Vec<String>,
    /// From the last fault until every unit had finished.
    recover_ms: u128,
    /// What broke, for the failure message.
    problems: Vec<String>,
}

impl Figures {
    /// Prints the figures as one line, then holds them to the promises.
    fn report(&self, test: &str, extra: &str) {
        println!(
            "faults: {test} lost={} doubled={} tasks={} task_ids_unique={} timers_fired_once={} recover_ms={} \
             timers={} children={} instances={} acknowledged={}{extra}",
            self.lost,
            self.doubled,
            self.tasks,
            self.task_ids_unique,
            self.timers_fired_once,
            self.recover_ms,
            self.timers,
            self.children,
            self.instances,
            self.acknowledged,
        );
        assert!(self.problems.is_empty(), "{test}: {:#?}", self.problems);
        assert_eq!((self.lost, self.doubled), (0, 0));
        assert!(self.task_ids_unique && self.timers_fired_once && self.children_once);
        assert!(self.wrong_ends.is_empty(), "{test}: ended otherwise: {:?}", self.wrong_ends);
    }

    /// Whether the load ran every kind of effect: tasks, timers and children.
    fn every_kind(&self) -> bool {
        self.tasks > 0 && self.timers > 0 && self.children > 0
    }
}

/// Waits until every unit has finished; how long that took from `last_fault`, and
/// the units that ended otherwise than they do when nothing fails.
async fn finished(reader: &TestServer, units: &[Unit], last_fault: Instant) -> (u128, Vec<String>) {
    let mut wrong_ends = Vec::new();
    for unit in units {
        let done = reader.finished(&unit.id).await;
        if done["state"] != unit.kind.done() {
            wrong_ends.push(format!("{:?} {} in {}", unit.kind, unit.id, done["state"]));
        }
    }
    (last_fault.elapsed().as_millis(), wrong_ends)
}

/// Once every unit has [`finished`], checks every instance's history and effects and
/// the stub's ledger against what clients were acknowledged.
async fn audit(
    reader: &TestServer,
    stub: &Stub,
    units: &[Unit],
    acks: &[Ack],
    finished: (u128, Vec<String>),
) -> Figures {
    let (recover_ms, wrong_ends) = finished;
    let mut figures = Figures { acknowledged: acks.len(), recover_ms, wrong_ends, ..Figures::default() };
    let instances = all_instances(reader, "").await;
    figures.instances = instances.len();

    // Started once per key: as many root instances of each definition as units.
    let mut roots: HashMap<&str, usize> = HashMap::new();
    for instance in instances.iter().filter(|instance| instance["parent_id"].is_null()) {
        *roots.entry(instance["definition"].as_str().unwrap_or_default()).or_default() += 1;
    }
    for kind in Kind::ALL {
        let units = units.iter().filter(|unit| unit.kind == kind).count();
        let stored = roots.get(kind.definition()).copied().unwrap_or_default();
        if stored != units {
            figures.doubled += stored.saturating_sub(units);
            figures.problems.push(format!("{units} {} started, {stored} stored", kind.definition()));
        }
    }

    // Per instance: its history's triggers, and its effects.
    let mut triggers: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut fired: HashMap<String, usize> = HashMap::new();
    let mut tasks: HashMap<String, (String, String)> = HashMap::new();
    let mut timers: Vec<(String, String)> = Vec::new();
    figures.children_once = true;
    figures.task_ids_unique = true;
    for instance in &instances {
        let id = instance["id"].as_str().expect("id");
        let history = reader.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
        let items = history["items"].as_array().cloned().unwrap_or_default();
        let seqs: Vec<i64> = items.iter().filter_map(|entry| entry["seq"].as_i64()).collect();
        if seqs != (1..=i64::try_from(items.len()).unwrap_or_default()).collect::<Vec<_>>() {
            figures.problems.push(format!("{id}: history has gaps: {seqs:?}"));
        }
        let seen = triggers.entry(id.to_owned()).or_default();
        for entry in &items {
            let Some(trigger) = entry["trigger"]["id"].as_str() else { continue };
            *seen.entry(trigger.to_owned()).or_default() += 1;
            if entry["trigger"]["name"] == "timer.fired" {
                *fired.entry(trigger.to_owned()).or_default() += 1;
            }
        }
        for (trigger, count) in seen.iter().filter(|(_, count)| **count > 1) {
            figures.doubled += count - 1;
            figures.problems.push(format!("{id}: {trigger} applied {count} times"));
        }

        let diagnostics = reader.get(&format!("/v1/instances/{id}/diagnostics")).await.expect(200).json();
        let effects = diagnostics["effects"].as_array().cloned().unwrap_or_default();
        for effect in &effects {
            let effect_id = effect["id"].as_str().expect("effect id").to_owned();
            let status = effect["status"].as_str().unwrap_or_default().to_owned();
            match effect["kind"].as_str() {
                Some("task") => {
                    let name = effect["name"].as_str().unwrap_or_default().to_owned();
                    if tasks.insert(effect_id.clone(), (id.to_owned(), name)).is_some() {
                        figures.task_ids_unique = false;
                        figures.problems.push(format!("two task effects share the id {effect_id}"));
                    }
                }
                Some("timer") => timers.push((effect_id, status)),
                _ => {}
            }
        }
        let child_effects: Vec<&Value> = effects.iter().filter(|effect| effect["kind"] == "child").collect();
        if !child_effects.is_empty() {
            figures.children += child_effects.len();
            let children = all_instances(reader, &format!("&parent={id}")).await;
            let mut started: Vec<&str> =
                children.iter().filter_map(|child| child["definition"].as_str()).collect();
            let mut asked: Vec<&str> =
                child_effects.iter().filter_map(|effect| effect["name"].as_str()).collect();
            started.sort_unstable();
            asked.sort_unstable();
            if started != asked {
                figures.children_once = false;
                figures.problems.push(format!("{id}: children asked for {asked:?}, started {started:?}"));
            }
        }
    }

    // Acknowledged: each key in its instance's history once.
    for ack in acks {
        let count =
            triggers.get(&ack.instance).and_then(|seen| seen.get(&ack.key)).copied().unwrap_or_default();
        if count == 0 {
            figures.lost += 1;
            figures.problems.push(format!(
                "acknowledged {} {} of {} is not in its history",
                ack.what, ack.key, ack.instance
            ));
        }
    }

    // Tasks: the stub heard each under its own effect's id, for that effect's instance
    // and task; and every effect that succeeded was heard.
    figures.tasks = tasks.len();
    let ledger = stub.ledger();
    let mut heard = HashSet::new();
    for (task, task_id, instance) in &ledger.requests {
        heard.insert(task_id.as_str());
        match tasks.get(task_id) {
            Some((of, name)) if of == instance && name == task => {}
            other => {
                figures.task_ids_unique = false;
                figures
                    .problems
                    .push(format!("the stub heard {task} {task_id} for {instance}; the effect is {other:?}"));
            }
        }
    }
    for (task_id, (instance, name)) in &tasks {
        let succeeded = triggers.get(instance).is_some_and(|seen| seen.contains_key(task_id));
        if succeeded && !heard.contains(task_id.as_str()) {
            figures.task_ids_unique = false;
            figures.problems.push(format!("{name} {task_id} of {instance} has a result the stub never gave"));
        }
    }
    // The gateways charged each payment at most once (`vendor_key` deduplicates).
    for (gateway, charges) in &ledger.charges {
        for vendor_key in charges.keys() {
            if ledger.charges_for(vendor_key) > 1 {
                figures.problems.push(format!("{vendor_key} charged at {gateway} and elsewhere"));
            }
        }
    }

    // Timers: each one that is not cancelled fired exactly once.
    figures.timers = timers.len();
    figures.timers_fired_once = true;
    for (timer, status) in &timers {
        let count = fired.get(timer).copied().unwrap_or_default();
        let expected = usize::from(status != "cancelled");
        if count != expected {
            figures.timers_fired_once = false;
            figures.problems.push(format!("timer {timer} ({status}) fired {count} times"));
        }
    }
    figures
}

/// Waits until `holds` (at most 30 s), looking every 10 ms.
async fn wait_for(what: &str, holds: impl Fn() -> bool) {
    for _ in 0..3000 {
        if holds() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not so within 30 s");
}

/// The lines where `hosts` logged a request that failed, with its cause.
fn failed_requests<'a>(hosts: impl IntoIterator<Item = &'a TestServer>) -> String {
    let logs: Vec<String> = hosts.into_iter().map(TestServer::log).collect();
    logs.iter()
        .flat_map(|log| log.lines())
        .filter(|line| line.contains("request failed"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every host answers `/readyz` with `status` (at most 30 s). The hosts are
/// asked at once: a probe that meets no database takes its time (up to 2 s) to say so.
async fn all_ready(hosts: &[TestServer], status: u16) {
    futures::future::join_all(hosts.iter().map(|host| ready(host, status))).await;
}

async fn ready(host: &TestServer, status: u16) {
    let (mut last, started) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(30) {
        last = host.request(Method::GET, "/readyz", &[], None).await.status.as_u16();
        if last == status {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, status, "{}: /readyz within 30 s; log:\n{}", host.base_url, host.log());
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
