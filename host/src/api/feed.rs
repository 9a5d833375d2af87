//! `GET /v1/feed`: every committed transition, in commit order, as CloudEvents 1.0 —
//! a page of JSON, or a live stream (`Accept: text/event-stream`).

use super::AppState;
use super::dto::FeedEventDto;
use super::extract::Query;
use super::openapi::LastEventIdHeader;
use super::problem::Problem;
use crate::model::FeedItem;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::VecDeque;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(feed))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FeedParams {
    /// A cursor this server handed out: the events after it. None: from the beginning.
    #[param(pattern = "^[0-9]+$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

#[derive(serde::Serialize, ToSchema)]
struct FeedPage<'a> {
    items: Vec<FeedEventDto<'a>>,
    /// Where to resume: the last item's cursor, or the one asked with if none came.
    next_cursor: String,
}

/// Reads the transition feed
///
/// Every committed transition, in commit order, as CloudEvents 1.0: a page of JSON, or
/// with `Accept: text/event-stream` a live stream of `switchyard.transition` events
/// whose `id` is the cursor to resume from.
#[utoipa::path(get, path = "/v1/feed", tag = "feed", params(FeedParams, LastEventIdHeader),
    responses(
        (status = 200, description = "A page of the feed, or the live stream", content(
            (FeedPage = "application/json"),
            (String = "text/event-stream"))),
        (status = 400, response = Problem),
    ))]
async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<FeedParams>,
) -> Result<Response, Problem> {
    let streams = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.split(',').any(|kind| kind.trim().starts_with("text/event-stream")));
    // A reconnecting EventSource sends where it got to; it wins over the query.
    let resume = headers.get("last-event-id").and_then(|value| value.to_str().ok()).filter(|_| streams);
    let after = parse_cursor(resume.or(params.after.as_deref()))?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    if streams {
        let Some(slot) = state.limits.stream_slot() else {
            return Ok(super::limits::overloaded("long-polls and streams"));
        };
        return Ok(stream(state, after, limit, slot).into_response());
    }
    let items = state.service.feed(after, limit).await?;
    let next_cursor = items.last().map_or(after, |item| item.position).to_string();
    let page = FeedPage { items: items.iter().map(FeedEventDto::new).collect(), next_cursor };
    Ok(axum::Json(page).into_response())
}

/// A cursor is a position this server handed out; none starts at the beginning.
fn parse_cursor(cursor: Option<&str>) -> Result<i64, Problem> {
    match cursor {
        None => Ok(0),
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|position| *position >= 0)
            .ok_or_else(|| Problem::bad_request("the cursor is not one this server handed out")),
    }
}

/// Reads on from `after` for as long as the client listens: a page at a time, and when
/// it has caught up, again after this process commits or hears that another host did,
/// or after the poll interval (for other hosts' commits it did not hear of). Ends when
/// the server stops or a read fails; the client resumes with `Last-Event-ID`. Holds
/// `slot` until it ends.
fn stream(
    state: AppState,
    after: i64,
    limit: u32,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    struct Reading {
        _slot: tokio::sync::OwnedSemaphorePermit,
        state: AppState,
        after: i64,
        limit: u32,
        ready: VecDeque<FeedItem>,
        written: crate::service::FeedWritten,
        stopping: tokio::sync::watch::Receiver<bool>,
    }
    let written = state.service.feed_written();
    let stopping = state.settings.stopping.clone();
    let reading = Reading { _slot: slot, state, after, limit, ready: VecDeque::new(), written, stopping };
    let events = futures_util::stream::unfold(reading, |mut reading| async move {
        loop {
            if let Some(item) = reading.ready.pop_front() {
                reading.after = item.position;
                let data = match serde_json::to_string(&FeedEventDto::new(&item)) {
                    Ok(data) => data,
                    Err(err) => {
                        tracing::warn!(%err, "the feed stream stops: an event could not be written");
                        return None;
                    }
                };
                let event =
                    Event::default().id(item.position.to_string()).event(FeedEventDto::TYPE).data(data);
                return Some((Ok(event), reading));
            }
            if *reading.stopping.borrow() {
                return None;
            }
            // Marked seen before reading, so that a commit during the read wakes the next wait.
            reading.written.mark_seen();
            match reading.state.service.feed(reading.after, reading.limit).await {
                Ok(items) if !items.is_empty() => reading.ready.extend(items),
                Ok(_) => {
                    let poll = reading.state.settings.feed_poll;
                    tokio::select! {
                        () = reading.written.changed() => {}
                        _ = reading.stopping.changed() => {}
                        () = tokio::time::sleep(poll) => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "the feed stream stops: reading failed");
                    return None;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
