//! `feed`: `/v1/feed`, a page of committed transitions, or the live stream of them.

use super::http::{Client, Error, EventStream};
use super::render::{Output, Table, emit, field, items, line, print_raw, text};
use clap::Args;
use reqwest::Method;
use reqwest::header::ACCEPT;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct Feed {
    /// Start after this cursor (a page's `next cursor`, an event's `cursor`)
    /// [default: the beginning].
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// At most this many per page [server's default: 100].
    #[arg(long)]
    limit: Option<u32>,
    /// Stay connected and print each transition as it commits, until Ctrl-C or until
    /// the server closes the stream.
    #[arg(long)]
    follow: bool,
}

const HEADER: [&str; 8] =
    ["CURSOR", "TIME", "INSTANCE", "DEFINITION", "VERSION", "TRANSITION", "TRIGGER", "ACTOR"];

pub async fn feed(client: Client, output: Output, args: Feed) -> Result<(), Error> {
    let query: Vec<(&str, String)> =
        [("after", args.after.clone()), ("limit", args.limit.map(|limit| limit.to_string()))]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
    let request = client.request(Method::GET, &["v1", "feed"]).query(&query);
    if !args.follow {
        let answer = client.send(request).await?;
        return output.print(&answer, |page| {
            let mut table = Table::new(&HEADER);
            for event in items(page, "items") {
                table.row(cells(event));
            }
            let mut text = table.render();
            text.push_str(&format!("next cursor: {}\n", field(page, "next_cursor")));
            text
        });
    }
    let mut stream = EventStream::new(client.open(request.header(ACCEPT, "text/event-stream")).await?);
    if output == Output::Table {
        emit(&HEADER.join("  "))?;
    }
    let mut resume = args.after;
    while let Some(event) = stream.next().await? {
        match output {
            // One CloudEvent per line, as the stream carries it.
            Output::Json => print_raw(event.data.as_bytes())?,
            Output::Table => {
                let transition = serde_json::from_str(&event.data)
                    .map_err(|err| Error::Local(format!("a feed event is not JSON: {err}")))?;
                emit(&line(&cells(&transition)))?;
            }
        }
        resume = event.id.or(resume);
    }
    // The server ends streams when it stops: say where to go on from.
    let after = resume.map(|cursor| format!(" --after {cursor}")).unwrap_or_default();
    Err(Error::Unreachable(format!("it closed the stream; follow on with `switchyard feed --follow{after}`")))
}

/// A transition of the feed (a CloudEvent) as a row.
fn cells(event: &Value) -> Vec<String> {
    let data = &event["data"];
    vec![
        field(data, "cursor"),
        field(event, "time"),
        field(event, "subject"),
        field(data, "definition"),
        field(data, "version"),
        format!("{} -> {}", field(data, "from_state"), field(data, "to_state")),
        format!("{} {}", text(&data["trigger"]["kind"]), text(&data["trigger"]["name"])),
        field(data, "actor"),
    ]
}
