//! `definitions`, `deploy`, `pin`, `retire`, `delete`: `/v1/definitions`.

use super::Keyed;
use super::http::{Client, Error, with_json};
use super::render::{Output, Table, field, fields, items, text};
use clap::Args;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct Show {
    /// A definition: its versions [default: every definition].
    name: Option<String>,
    /// With NAME: that version's manifest (states, actions, transitions).
    #[arg(long, requires = "name")]
    version: Option<u32>,
}

pub async fn show(client: Client, output: Output, args: Show) -> Result<(), Error> {
    let version = args.version.map(|version| version.to_string());
    let segments = match (&args.name, &version) {
        (Some(name), Some(version)) => vec!["v1", "definitions", name, "versions", version],
        (Some(name), None) => vec!["v1", "definitions", name],
        (None, _) => vec!["v1", "definitions"],
    };
    let answer = client.send(client.request(Method::GET, &segments)).await?;
    output.print(&answer, |body| match (&args.name, version) {
        (_, Some(_)) => version_view(body),
        (Some(_), None) => versions_table(std::slice::from_ref(body)),
        (None, None) => versions_table(items(body, "items")),
    })
}

#[derive(Debug, Args)]
pub struct Deploy {
    /// The module: a `.wasm` file.
    file: PathBuf,
    #[command(flatten)]
    keyed: Keyed,
}

pub async fn deploy(client: Client, output: Output, args: Deploy) -> Result<(), Error> {
    let wasm = std::fs::read(&args.file)
        .map_err(|err| Error::Local(format!("cannot read {}: {err}", args.file.display())))?;
    let request = client
        .request(Method::POST, &["v1", "definitions"])
        .header(CONTENT_TYPE, "application/wasm")
        .body(wasm);
    let answer = client.send_keyed(request, &args.keyed.key()).await?;
    output.print(&answer, version_view)
}

#[derive(Debug, Args)]
pub struct Pin {
    /// The definition.
    name: String,
    /// The version new instances get.
    #[arg(required_unless_present = "unpin")]
    version: Option<u32>,
    /// Unpin: new instances get the highest version that is not retired.
    #[arg(long, conflicts_with = "version")]
    unpin: bool,
    #[command(flatten)]
    keyed: Keyed,
}

pub async fn pin(client: Client, output: Output, args: Pin) -> Result<(), Error> {
    let path = ["v1", "definitions", &args.name, "default-version"];
    let request = with_json(client.request(Method::PUT, &path), &json!({ "version": args.version }))?;
    let answer = client.send_keyed(request, &args.keyed.key()).await?;
    output.print(&answer, |body| versions_table(std::slice::from_ref(body)))
}

#[derive(Debug, Args)]
pub struct VersionOf {
    /// The definition.
    name: String,
    /// Its version.
    version: u32,
    #[command(flatten)]
    keyed: Keyed,
}

pub async fn retire(client: Client, output: Output, args: VersionOf) -> Result<(), Error> {
    let version = args.version.to_string();
    let path = ["v1", "definitions", &args.name, "versions", &version, "retire"];
    let answer = client.send_keyed(client.request(Method::POST, &path), &args.keyed.key()).await?;
    output.print(&answer, version_view)
}

pub async fn delete(client: Client, output: Output, args: VersionOf) -> Result<(), Error> {
    let version = args.version.to_string();
    let path = ["v1", "definitions", &args.name, "versions", &version];
    let answer = client.send_keyed(client.request(Method::DELETE, &path), &args.keyed.key()).await?;
    // 204: no body to print as JSON; people get a line.
    output.print(&answer, |_| format!("deleted {} version {version}", args.name))
}

/// One row per version of each definition.
fn versions_table(definitions: &[Value]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "VERSION",
        "NEW INSTANCES",
        "RETIRED",
        "DEPLOYED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "SHA256",
    ]);
    for definition in definitions {
        for version in items(definition, "versions") {
            let new_instances = if definition["pinned_version"] == version["version"] {
                "pinned"
            } else if definition["default_version"] == version["version"] {
                "default"
            } else {
                ""
            };
            let count = |status: &str| version["instances"][status].as_i64().unwrap_or(0).to_string();
            let sha256: String = field(version, "sha256").chars().take(12).collect();
            table.row(vec![
                field(definition, "name"),
                field(version, "version"),
                new_instances.to_owned(),
                if version["retired"] == true { field(version, "retired_at") } else { String::new() },
                field(version, "deployed_at"),
                count("running"),
                count("completed"),
                count("failed"),
                count("cancelled"),
                sha256,
            ]);
        }
    }
    table.render()
}

/// A version: what it is, then its states and actions.
fn version_view(version: &Value) -> String {
    let mut text_out = fields(&[
        ("definition", field(version, "name")),
        ("version", field(version, "version")),
        ("sha256", field(version, "sha256")),
        ("deployed", field(version, "deployed_at")),
        ("retired", field(version, "retired_at")),
        ("abi", field(version, "abi")),
        ("initial state", field(version, "initial_state")),
        ("migrates from", text(&version["migrates_from"])),
    ]);
    let mut states = Table::new(&["STATE", "STATUS", "DESCRIPTION"]);
    for state in items(version, "states") {
        states.row(vec![field(state, "name"), field(state, "status"), field(state, "description")]);
    }
    let mut actions = Table::new(&["ACTION", "FROM", "TO", "ADMIN ONLY", "DESCRIPTION"]);
    for action in items(version, "actions") {
        actions.row(vec![
            field(action, "name"),
            field(action, "from"),
            field(action, "to"),
            if action["admin_only"] == true { "yes" } else { "" }.to_owned(),
            field(action, "description"),
        ]);
    }
    text_out.push('\n');
    text_out.push_str(&states.render());
    text_out.push('\n');
    text_out.push_str(&actions.render());
    text_out
}
