//! `start`, `get`, `list`, `act`, `events`, `send-event`, `history`, `diagnostics`:
//! `/v1/instances` (and creation under `/v1/definitions/{name}/instances`).

use super::http::{Answer, Client, Error, with_json};
use super::render::{Output, Table, field, fields, items, text};
use super::{Keyed, json_argument};
use clap::Args;
use reqwest::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct Start {
    /// The definition to start an instance of.
    definition: String,
    /// The input, as JSON; `@FILE` reads it from a file [default: null].
    #[arg(long, value_parser = json_argument)]
    input: Option<Box<RawValue>>,
    /// The version to start on [default: the pinned one, else the highest not retired].
    #[arg(long)]
    version: Option<u32>,
    /// Where the server posts the instance once it ends.
    #[arg(long, value_name = "URL")]
    callback_url: Option<String>,
    #[command(flatten)]
    keyed: Keyed,
}

#[derive(Serialize)]
struct StartBody<'a> {
    input: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

pub async fn start(client: Client, output: Output, args: Start) -> Result<(), Error> {
    let body = StartBody {
        input: args.input.as_deref().unwrap_or(RawValue::NULL),
        version: args.version,
        callback_url: args.callback_url.as_deref(),
    };
    let path = ["v1", "definitions", &args.definition, "instances"];
    let request = with_json(client.request(Method::POST, &path), &body)?;
    let answer = client.send_keyed(request, &args.keyed.key()).await?;
    print_instance(output, &answer)
}

#[derive(Debug, Args)]
pub struct Get {
    /// The instance's id.
    id: String,
    /// Wait up to SECS for the instance to change (a long-poll), then show it as it
    /// is; the command ends as soon as it changes.
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
}

pub async fn get(client: Client, output: Output, args: Get) -> Result<(), Error> {
    let path = ["v1", "instances", args.id.as_str()];
    let mut answer = client.send(client.request(Method::GET, &path)).await?;
    if let Some(wait) = args.wait {
        // Waits away from the ETag just read, again and again: the server caps each
        // long-poll (`Preference-Applied`) and may end it early when it stops.
        let deadline = Instant::now() + Duration::from_secs(wait);
        let seen = answer.header(ETAG.as_str()).map(str::to_owned);
        loop {
            let seconds = deadline.saturating_duration_since(Instant::now()).as_secs();
            if seconds == 0 {
                break;
            }
            let mut poll = client.request(Method::GET, &path).header("prefer", format!("wait={seconds}"));
            if let Some(seen) = &seen {
                poll = poll.header(IF_NONE_MATCH, seen);
            }
            let polled = client.send(poll).await?;
            if polled.status != StatusCode::NOT_MODIFIED {
                answer = polled;
                break;
            }
        }
    }
    print_instance(output, &answer)
}

#[derive(Debug, Args)]
pub struct List {
    /// Only instances of this definition.
    #[arg(long)]
    definition: Option<String>,
    /// Only instances on this version.
    #[arg(long)]
    version: Option<u32>,
    /// Only instances in this state.
    #[arg(long)]
    state: Option<String>,
    /// Only instances with this status.
    #[arg(long, value_parser = ["running", "completed", "failed", "cancelled"])]
    status: Option<String>,
    /// Only the children of this instance.
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// At most this many [server's default: 50].
    #[arg(long)]
    limit: Option<u32>,
    /// Where to go on from: the `next cursor` of the page before.
    #[arg(long)]
    cursor: Option<String>,
}

pub async fn list(client: Client, output: Output, args: List) -> Result<(), Error> {
    let filters = [
        ("definition", args.definition),
        ("version", args.version.map(|version| version.to_string())),
        ("state", args.state),
        ("status", args.status),
        ("parent", args.parent),
        ("limit", args.limit.map(|limit| limit.to_string())),
        ("cursor", args.cursor),
    ];
    let query: Vec<(&str, String)> =
        filters.into_iter().filter_map(|(name, value)| Some((name, value?))).collect();
    let answer = client.send(client.request(Method::GET, &["v1", "instances"]).query(&query)).await?;
    output.print(&answer, |page| {
        let mut table =
            Table::new(&["ID", "DEFINITION", "VERSION", "STATE", "STATUS", "REVISION", "UPDATED"]);
        for instance in items(page, "items") {
            table.row(vec![
                field(instance, "id"),
                field(instance, "definition"),
                field(instance, "definition_version"),
                field(instance, "state"),
                field(instance, "status"),
                field(instance, "revision"),
                field(instance, "updated_at"),
            ]);
        }
        let mut text = table.render();
        if let Some(cursor) = page["next_cursor"].as_str() {
            text.push_str(&format!("next cursor: {cursor}\n"));
        }
        text
    })
}

#[derive(Debug, Args)]
pub struct Act {
    /// The instance's id.
    id: String,
    /// The action, as the definition's manifest names it.
    action: String,
    /// The action's payload, as JSON; `@FILE` reads it from a file.
    #[arg(long, value_parser = json_argument)]
    payload: Option<Box<RawValue>>,
    /// Act only if the instance is still at this revision (or ETag): else 412, exit 4.
    #[arg(long, value_name = "REVISION")]
    if_match: Option<String>,
    #[command(flatten)]
    keyed: Keyed,
}

#[derive(Serialize)]
struct PayloadBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

pub async fn act(client: Client, output: Output, args: Act) -> Result<(), Error> {
    let path = ["v1", "instances", &args.id, "actions", &args.action];
    let mut request =
        with_json(client.request(Method::POST, &path), &PayloadBody { payload: args.payload.as_deref() })?;
    if let Some(revision) = &args.if_match {
        // A bare revision is made the ETag the server issues for it.
        let etag = if revision.chars().all(|char| char.is_ascii_digit()) {
            format!("\"{revision}\"")
        } else {
            revision.clone()
        };
        request = request.header(IF_MATCH, etag);
    }
    let answer = client.send_keyed(request, &args.keyed.key()).await?;
    print_instance(output, &answer)
}

#[derive(Debug, Args)]
pub struct Id {
    /// The instance's id.
    id: String,
}

pub async fn events(client: Client, output: Output, args: Id) -> Result<(), Error> {
    let answer = client.send(client.request(Method::GET, &["v1", "instances", &args.id, "events"])).await?;
    output.print(&answer, |body| events_table(items(body, "items")))
}

#[derive(Debug, Args)]
pub struct SendEvent {
    /// The instance's id.
    id: String,
    /// The event's type.
    #[arg(long = "type", value_name = "TYPE")]
    kind: String,
    /// The event's id: the server drops an event whose id it has seen, so the command
    /// may be run again after a failure.
    #[arg(long)]
    event_id: String,
    /// The event's payload, as JSON; `@FILE` reads it from a file.
    #[arg(long, value_parser = json_argument)]
    payload: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct EventBody<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

pub async fn send_event(client: Client, output: Output, args: SendEvent) -> Result<(), Error> {
    let body = EventBody { event_id: &args.event_id, kind: &args.kind, payload: args.payload.as_deref() };
    let request = with_json(client.request(Method::POST, &["v1", "instances", &args.id, "events"]), &body)?;
    let answer = client.send(request).await?;
    output.print(&answer, |posted| {
        let mut text = fields(&[
            ("event id", field(posted, "event_id")),
            ("status", field(posted, "status")),
            ("code", field(posted, "code")),
            ("reason", field(posted, "reason")),
        ]);
        if posted["instance"].is_object() {
            text.push('\n');
            text.push_str(&instance_view(&posted["instance"], None));
        }
        text
    })
}

pub async fn history(client: Client, output: Output, args: Id) -> Result<(), Error> {
    let answer = client.send(client.request(Method::GET, &["v1", "instances", &args.id, "history"])).await?;
    output.print(&answer, |body| {
        let mut table = Table::new(&["SEQ", "FROM", "TO", "TRIGGER", "ACTOR", "VERSION", "FUEL", "AT"]);
        for entry in items(body, "items") {
            table.row(vec![
                field(entry, "seq"),
                field(entry, "from_state"),
                field(entry, "to_state"),
                format!("{} {}", text(&entry["trigger"]["kind"]), text(&entry["trigger"]["name"])),
                field(entry, "actor"),
                field(entry, "definition_version"),
                field(entry, "fuel_used"),
                field(entry, "at"),
            ]);
        }
        table.render()
    })
}

pub async fn diagnostics(client: Client, output: Output, args: Id) -> Result<(), Error> {
    let path = ["v1", "instances", &args.id, "diagnostics"];
    let answer = client.send(client.request(Method::GET, &path)).await?;
    output.print(&answer, |diagnostics| {
        let mut effects = Table::new(&[
            "EFFECT",
            "KIND",
            "NAME",
            "STATUS",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "LAST ERROR",
            "SEQ",
        ]);
        for effect in items(diagnostics, "effects") {
            effects.row(vec![
                field(effect, "id"),
                field(effect, "kind"),
                field(effect, "name"),
                field(effect, "status"),
                field(effect, "attempts"),
                field(effect, "next_attempt_at"),
                field(effect, "last_error"),
                field(effect, "seq"),
            ]);
        }
        let mut calls = Table::new(&["SEQ", "TRIGGER", "NAME", "FUEL", "AT"]);
        for call in items(diagnostics, "recent_calls") {
            calls.row(vec![
                field(call, "seq"),
                field(call, "trigger"),
                field(call, "name"),
                field(call, "fuel_used"),
                field(call, "at"),
            ]);
        }
        let mut keys = Table::new(&["SCOPE", "KEY", "STATUS", "CREATED"]);
        for record in items(diagnostics, "idempotency_records") {
            keys.row(vec![
                field(record, "scope"),
                field(record, "key"),
                field(record, "status"),
                field(record, "created_at"),
            ]);
        }
        let sections = [
            instance_view(&diagnostics["instance"], None),
            fields(&[("module sha256", field(diagnostics, "module_sha256"))]),
            format!("Effects\n{}", effects.render()),
            format!("Events received\n{}", events_table(items(diagnostics, "events"))),
            format!("Recent calls\n{}", calls.render()),
            format!("Idempotency records\n{}", keys.render()),
        ];
        sections.join("\n")
    })
}

/// Prints an instance answer, with the ETag it came with.
pub(super) fn print_instance(output: Output, answer: &Answer) -> Result<(), Error> {
    output.print(answer, |instance| instance_view(instance, answer.header(ETAG.as_str())))
}

/// An instance, field by field.
pub(super) fn instance_view(instance: &Value, etag: Option<&str>) -> String {
    fields(&[
        ("id", field(instance, "id")),
        ("definition", field(instance, "definition")),
        ("version", field(instance, "definition_version")),
        ("state", field(instance, "state")),
        ("status", field(instance, "status")),
        ("revision", field(instance, "revision")),
        ("etag", etag.unwrap_or("-").to_owned()),
        ("allowed actions", field(instance, "allowed_actions")),
        ("message", field(instance, "message")),
        ("error", field(instance, "error")),
        ("parent", field(instance, "parent_id")),
        ("callback url", field(instance, "callback_url")),
        ("created", field(instance, "created_at")),
        ("updated", field(instance, "updated_at")),
        ("data", instance["data"].to_string()),
    ])
}

/// Received events, and what became of each.
fn events_table(events: &[Value]) -> String {
    let mut table = Table::new(&["EVENT ID", "TYPE", "STATUS", "SEQ", "RECEIVED", "WHY"]);
    for event in events {
        // Refused: the definition's code and reason; still accepted: the last failure.
        let why = match (event["code"].as_str(), event["last_error"].as_str()) {
            (Some(code), _) => format!("{code}: {}", field(event, "reason")),
            (None, Some(error)) => format!("{error} (attempts: {})", field(event, "attempts")),
            (None, None) => String::new(),
        };
        table.row(vec![
            field(event, "event_id"),
            field(event, "type"),
            field(event, "status"),
            field(event, "seq"),
            field(event, "received_at"),
            why,
        ]);
    }
    table.render()
}
