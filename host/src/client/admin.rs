//! `cancel`, `force-complete`, `migrate` (one instance, or `--bulk`), `migrations`:
//! `/v1/admin`.

use super::Keyed;
use super::http::{Answer, Client, Error, with_json};
use super::instances::print_instance;
use super::render::{Output, Table, field, fields, items};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

/// How often a bulk migration is asked for its progress: the API offers no long-poll
/// on migrations, and people watching a bar want it to move about twice a second.
const PROGRESS_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct Override {
    /// The instance's id.
    id: String,
    /// Why: history records it, with who did it.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    keyed: Keyed,
}

/// Cancels or force-completes (`verb`) an instance.
pub async fn overrule(client: Client, output: Output, args: Override, verb: &str) -> Result<(), Error> {
    let path = ["v1", "admin", "instances", &args.id, verb];
    let request = with_json(client.request(Method::POST, &path), &json!({ "reason": args.reason }))?;
    let answer = client.send_keyed(request, &args.keyed.key()).await?;
    print_instance(output, &answer)
}

#[derive(Debug, Args)]
pub struct Migrate {
    /// The instance to migrate (without --bulk).
    #[arg(required_unless_present = "bulk", conflicts_with = "bulk")]
    id: Option<String>,
    /// Migrate every instance of a version, as an operation the server runs on its own;
    /// a progress bar shows how far it got, and the final report is printed.
    #[arg(long, requires_all = ["definition", "from_version"])]
    bulk: bool,
    /// With --bulk: the definition.
    #[arg(long, requires = "bulk")]
    definition: Option<String>,
    /// With --bulk: the version to migrate instances from.
    #[arg(long, requires = "bulk")]
    from_version: Option<u32>,
    /// The version to migrate to.
    #[arg(long)]
    to_version: u32,
    /// With --bulk: only instances in this state (repeat for more) [default: every state].
    #[arg(long = "state", value_name = "STATE", requires = "bulk")]
    states: Vec<String>,
    /// Why: history records it, with who did it.
    #[arg(long)]
    reason: String,
    /// Report what would happen, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --bulk: print the operation as started, and do not wait for it.
    #[arg(long, requires = "bulk")]
    detach: bool,
    #[command(flatten)]
    keyed: Keyed,
}

#[derive(Serialize)]
struct BulkBody<'a> {
    definition: &'a str,
    from_version: u32,
    to_version: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    states: &'a [String],
    dry_run: bool,
    reason: &'a str,
}

pub async fn migrate(client: Client, output: Output, args: Migrate) -> Result<(), Error> {
    let key = args.keyed.key();
    match (&args.id, &args.definition, args.from_version) {
        (Some(id), None, None) => {
            let path = ["v1", "admin", "instances", id, "migrate"];
            let body =
                json!({ "to_version": args.to_version, "reason": args.reason, "dry_run": args.dry_run });
            let answer =
                client.send_keyed(with_json(client.request(Method::POST, &path), &body)?, &key).await?;
            if answer.header("switchyard-dry-run") == Some("true") {
                eprintln!("dry run: this is what the migration would make of it; nothing was written");
            }
            print_instance(output, &answer)
        }
        (None, Some(definition), Some(from_version)) => {
            let body = BulkBody {
                definition,
                from_version,
                to_version: args.to_version,
                states: &args.states,
                dry_run: args.dry_run,
                reason: &args.reason,
            };
            let request = with_json(client.request(Method::POST, &["v1", "admin", "migrations"]), &body)?;
            let started = client.send_keyed(request, &key).await?;
            let answer = if args.detach { started } else { wait_for_migration(&client, started).await? };
            output.print(&answer, migration_view)
        }
        _ => Err(Error::Usage("give an instance id, or --bulk with --definition and --from-version".into())),
    }
}

/// Polls the migration `started` until it is no longer running, drawing its progress
/// on stderr (when that is a terminal); its last answer.
async fn wait_for_migration(client: &Client, started: Answer) -> Result<Answer, Error> {
    let mut migration = started.json()?;
    let id = migration["id"]
        .as_str()
        .ok_or_else(|| Error::Local("the server's answer names no migration id".into()))?
        .to_owned();
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{wide_bar}] {pos}/{len}  {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut answer = started;
    while migration["status"] == "running" {
        show_progress(&bar, &migration);
        tokio::time::sleep(PROGRESS_POLL).await;
        answer = client.send(client.request(Method::GET, &["v1", "admin", "migrations", &id])).await?;
        migration = answer.json()?;
    }
    bar.finish_and_clear();
    Ok(answer)
}

fn show_progress(bar: &ProgressBar, migration: &Value) {
    let count = |name: &str| migration[name].as_u64().unwrap_or(0);
    bar.set_message(format!(
        "migrated {}, failed {}, skipped {}",
        count("migrated"),
        count("failed"),
        count("skipped")
    ));
    bar.set_length(count("total"));
    bar.set_position(count("migrated") + count("failed") + count("skipped"));
}

#[derive(Debug, Args)]
pub struct MigrationId {
    /// The bulk migration's id.
    id: String,
}

pub async fn migration(client: Client, output: Output, args: MigrationId) -> Result<(), Error> {
    let answer = client.send(client.request(Method::GET, &["v1", "admin", "migrations", &args.id])).await?;
    output.print(&answer, migration_view)
}

/// A bulk migration: what it is, how far it got, and which instances failed and why.
fn migration_view(migration: &Value) -> String {
    let mut text = fields(&[
        ("id", field(migration, "id")),
        ("definition", field(migration, "definition")),
        ("from version", field(migration, "from_version")),
        ("to version", field(migration, "to_version")),
        ("states", field(migration, "states")),
        ("dry run", field(migration, "dry_run")),
        ("reason", field(migration, "reason")),
        ("actor", field(migration, "actor")),
        ("status", field(migration, "status")),
        ("total", field(migration, "total")),
        ("migrated", field(migration, "migrated")),
        ("failed", field(migration, "failed")),
        ("skipped", field(migration, "skipped")),
        ("created", field(migration, "created_at")),
        ("finished", field(migration, "finished_at")),
    ]);
    let failures = items(migration, "failures");
    if !failures.is_empty() {
        let mut table = Table::new(&["INSTANCE", "REASON"]);
        for failure in failures {
            table.row(vec![field(failure, "instance_id"), field(failure, "reason")]);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    text
}
