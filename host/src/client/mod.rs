//! The command-line client: one subcommand per operation of the HTTP API (SPEC §4),
//! talking HTTP to a running server. `main.rs` flattens [`ClientCommand`] into the
//! binary's commands and calls [`run`].
//!
//! Each command builds its request, sends it through [`http::Client`] (which turns
//! every failure into an [`http::Error`] and its exit code) and prints the answer with
//! [`render::Output`]: the body as the API gave it, or a table.
//!
//! Invariant: the client knows the server only through HTTP; it uses no other module
//! of this crate, so it cannot depend on anything the API does not promise.

mod admin;
mod definitions;
mod feed;
mod http;
mod instances;
mod render;

use clap::{Args, Subcommand};
use http::{Client, Error, exit};
use render::Output;
use serde_json::value::RawValue;

/// The exit codes, for every command's `--help` (and `docs/operations.md`).
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success
  1  any other failure (a file that cannot be read, an answer the API does not promise)
  2  the command line is wrong
  3  the server refused the request (4xx other than those below: bad request,
     unauthorized, forbidden, not found, unprocessable)
  4  conflict: 409 or 412 (not allowed in the current state, the instance changed,
     the version is in use); read again before retrying
  5  the server failed (5xx), is overloaded (429) or could not be reached; retry later

An error is described on stderr (a problem's title, detail, type and correlation id);
with --output json, the error's body is printed on stdout as well."
    };
}

/// Examples, then the exit codes.
macro_rules! help {
    ($($example:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $example, "\n",)+ "\n", exit_codes!())
    };
}

/// The client's commands; each takes `--server`, `--api-key` and `--output`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List the definitions, one definition's versions, or one version's manifest.
    #[command(after_help = help!(
        "switchyard definitions",
        "switchyard definitions document-processing",
        "switchyard definitions document-processing --version 2 --output json",
    ))]
    Definitions(Call<definitions::Show>),
    /// Deploy a definition module (deployer role).
    #[command(after_help = help!("switchyard deploy target/modules/document-processing.wasm"))]
    Deploy(Call<definitions::Deploy>),
    /// Pin the version new instances of a definition get, or unpin it (admin role).
    #[command(after_help = help!("switchyard pin document-processing 1", "switchyard pin document-processing --unpin"))]
    Pin(Call<definitions::Pin>),
    /// Retire a version: no new instances; running ones continue (admin role).
    #[command(after_help = help!("switchyard retire document-processing 1"))]
    Retire(Call<definitions::VersionOf>),
    /// Delete a retired version that no running instance uses (admin role).
    #[command(after_help = help!("switchyard delete document-processing 1"))]
    Delete(Call<definitions::VersionOf>),
    /// Start an instance of a definition.
    #[command(after_help = help!(
        "switchyard start document-processing --input '{\"document_url\": \"s3://docs/a.pdf\"}'",
        "switchyard start document-processing --input @input.json --version 1 --idempotency-key upload-42",
    ))]
    Start(Call<instances::Start>),
    /// Show an instance (with its ETag), or wait for it to change.
    #[command(after_help = help!(
        "switchyard get 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e",
        "switchyard get 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --wait 30 --output json",
    ))]
    Get(Call<instances::Get>),
    /// List instances, newest first, a page at a time.
    #[command(after_help = help!(
        "switchyard list --definition document-processing --status running",
        "switchyard list --parent 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --limit 10",
    ))]
    List(Call<instances::List>),
    /// Run an action on an instance.
    #[command(after_help = help!(
        "switchyard act 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e validate",
        "switchyard act 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e fail --payload '{\"reason\": \"bad scan\"}' --if-match 2",
    ))]
    Act(Call<instances::Act>),
    /// List the events an instance received, and what became of each.
    #[command(after_help = help!("switchyard events 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e"))]
    Events(Call<instances::Id>),
    /// Send an event to an instance (deduplicated by its event id).
    #[command(after_help = help!(
        "switchyard send-event 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --type payment.settled --event-id evt_81 --payload '{\"amount\": 12}'",
    ))]
    SendEvent(Call<instances::SendEvent>),
    /// Show an instance's history: one entry per transition.
    #[command(after_help = help!("switchyard history 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e"))]
    History(Call<instances::Id>),
    /// Show why an instance stands where it does: effects, events, calls, keys (admin role).
    #[command(after_help = help!("switchyard diagnostics 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --output json"))]
    Diagnostics(Call<instances::Id>),
    /// Cancel an instance, through its definition, with an audited reason (admin role).
    #[command(after_help = help!("switchyard cancel 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --reason 'customer withdrew'"))]
    Cancel(Call<admin::Override>),
    /// Force-complete an instance, through its definition, with an audited reason (admin role).
    #[command(after_help = help!("switchyard force-complete 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --reason 'done by hand'"))]
    ForceComplete(Call<admin::Override>),
    /// Move one running instance, or all of a version's (--bulk), to another version (admin role).
    #[command(after_help = help!(
        "switchyard migrate 0193b6c2-7d4e-7c1a-9f00-5b1f2a3c4d5e --to-version 2 --reason 'adopt reviews' --dry-run",
        "switchyard migrate --bulk --definition document-processing --from-version 1 --to-version 2 --reason 'v2 rollout'",
        "switchyard migrate --bulk --definition document-processing --from-version 1 --to-version 2 --state UPLOADED --reason r --detach",
    ))]
    Migrate(Call<admin::Migrate>),
    /// Show a bulk migration: its progress and per-instance failures (admin role).
    #[command(after_help = help!("switchyard migrations 0193b6c2-0000-7000-8000-000000000001"))]
    Migrations(Call<admin::MigrationId>),
    /// Read the feed of committed transitions, a page at a time or live (--follow).
    #[command(after_help = help!(
        "switchyard feed --after 120 --limit 50",
        "switchyard feed --follow --output json   # until Ctrl-C",
    ))]
    Feed(Call<feed::Feed>),
}

/// Runs a client command; the process's exit code.
pub async fn run(command: ClientCommand) -> i32 {
    use ClientCommand as C;
    match command {
        C::Definitions(call) => call.run(definitions::show).await,
        C::Deploy(call) => call.run(definitions::deploy).await,
        C::Pin(call) => call.run(definitions::pin).await,
        C::Retire(call) => call.run(definitions::retire).await,
        C::Delete(call) => call.run(definitions::delete).await,
        C::Start(call) => call.run(instances::start).await,
        C::Get(call) => call.run(instances::get).await,
        C::List(call) => call.run(instances::list).await,
        C::Act(call) => call.run(instances::act).await,
        C::Events(call) => call.run(instances::events).await,
        C::SendEvent(call) => call.run(instances::send_event).await,
        C::History(call) => call.run(instances::history).await,
        C::Diagnostics(call) => call.run(instances::diagnostics).await,
        C::Cancel(call) => {
            call.run(|client, output, args| admin::overrule(client, output, args, "cancel")).await
        }
        C::ForceComplete(call) => {
            call.run(|client, output, args| admin::overrule(client, output, args, "force-complete")).await
        }
        C::Migrate(call) => call.run(admin::migrate).await,
        C::Migrations(call) => call.run(admin::migration).await,
        C::Feed(call) => call.run(feed::feed).await,
    }
}

/// A command's own arguments, beside those every client command takes.
#[derive(Debug, Args)]
pub struct Call<T: Args> {
    #[command(flatten)]
    args: T,
    // Last: its help heading holds for the arguments after it.
    #[command(flatten)]
    common: Common,
}

/// What every client command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
struct Common {
    /// The server's base URL.
    #[arg(long, env = "SWITCHYARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API key (not needed by a server without keys).
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// `table` for people, `json` for scripts: the response body as the API gives it.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

impl<T: Args> Call<T> {
    /// Runs `command` with a client of the server, reports its error if it fails, and
    /// answers the exit code.
    async fn run<F, Fut>(self, command: F) -> i32
    where
        F: FnOnce(Client, Output, T) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let output = self.common.output;
        let ran = match Client::new(&self.common.server, self.common.api_key) {
            Ok(client) => command(client, output, self.args).await,
            Err(err) => Err(err),
        };
        let Err(err) = ran else { return exit::SUCCESS };
        if let (Output::Json, Error::Refused(answer)) = (output, &err) {
            // A script reads the problem's type from stdout; stderr has the summary.
            let _ = render::print_raw(&answer.body);
        }
        eprintln!("{}", err.describe());
        err.exit_code()
    }
}

/// The `Idempotency-Key` of a command that changes something.
#[derive(Debug, Args)]
struct Keyed {
    /// The Idempotency-Key to send [default: a new UUIDv4]. Running the command again
    /// with the same key and arguments replays the first answer instead of acting twice.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

impl Keyed {
    fn key(&self) -> String {
        self.idempotency_key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }
}

/// A JSON argument: the text itself, or `@FILE` for a file's content. Kept as written
/// (not re-encoded), so numbers and key order reach the server as given.
fn json_argument(text: &str) -> Result<Box<RawValue>, String> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))?,
        None => text.to_owned(),
    };
    RawValue::from_string(text.trim().to_owned()).map_err(|err| format!("not JSON: {err}"))
}
