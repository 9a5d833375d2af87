//! Requests to the server and what can go wrong with them: every command sends through
//! [`Client::send`] (or [`Client::open`] for a stream), so each failure is reported and
//! mapped to an exit code in one place ([`Error`]).

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;
use std::time::Duration;

/// A connection that hangs this long is a server that cannot be reached; a request
/// itself has no deadline, since long-polls and streams last as long as they were asked to.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's address and the key to show it.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    server: Url,
    api_key: Option<String>,
}

/// A response the server gave, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a command failed; [`Error::exit_code`] is what scripts see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A local failure, or an answer that is not what the API promises.
    #[error("{0}")]
    Local(String),
    /// No answer: the server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("the server answered {}", .0.status)]
    Refused(Box<Answer>),
}

/// The exit codes, as `--help` and `docs/operations.md` list them.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    /// Anything not listed below.
    pub const OTHER: i32 = 1;
    /// The command line is wrong (clap uses it for its own checks too).
    pub const USAGE: i32 = 2;
    /// The server refused the request (4xx other than 409, 412 and 429).
    pub const REFUSED: i32 = 3;
    /// 409 or 412: the instance or version is not in a state that allows it.
    pub const CONFLICT: i32 = 4;
    /// A server error (5xx), overload (429), or no answer at all: worth retrying later.
    pub const UNAVAILABLE: i32 = 5;
}

impl Client {
    /// A client of the server at `server` (its base URL: a path prefix is kept).
    pub fn new(server: &str, api_key: Option<String>) -> Result<Client, Error> {
        let server = Url::parse(server)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base())
            .ok_or_else(|| Error::Usage(format!("--server {server:?} is not an http or https URL")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Local(format!("cannot set up HTTP: {err}")))?;
        Ok(Client { http, server, api_key })
    }

    /// A request to the path made of `segments`, each percent-encoded (so an id or a
    /// name cannot reach another path), carrying the API key if there is one.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.server.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request` and reads the whole answer: a success (or 304), else
    /// [`Error::Refused`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Answer, Error> {
        Answer::read(self.open(request).await?).await
    }

    /// Sends `request` under an `Idempotency-Key`, so that it can be sent again safely.
    /// When no answer came, the error names the key to retry with.
    pub async fn send_keyed(&self, request: RequestBuilder, key: &str) -> Result<Answer, Error> {
        match self.send(request.header("idempotency-key", key)).await {
            Err(Error::Unreachable(err)) => Err(Error::Unreachable(format!(
                "{err}\nthe server may have done it: run the command again with --idempotency-key {key}"
            ))),
            answered => answered.inspect(|answer| {
                if answer.header("idempotent-replayed") == Some("true") {
                    eprintln!("note: the answer kept under idempotency key {key} was replayed");
                }
            }),
        }
    }

    /// Sends `request` and hands back the response to read on (a stream), once it is a
    /// success; an error status is read whole into [`Error::Refused`].
    pub async fn open(&self, request: RequestBuilder) -> Result<reqwest::Response, Error> {
        let response = request.send().await.map_err(|err| Error::Unreachable(describe(&err)))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        Err(Error::Refused(Box::new(Answer::read(response).await?)))
    }
}

impl Answer {
    async fn read(response: reqwest::Response) -> Result<Answer, Error> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|err| Error::Unreachable(describe(&err)))?;
        Ok(Answer { status, headers, body: body.to_vec() })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON; an empty body is `null` (a 204 has none).
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|err| Error::Local(format!("the server's answer is not JSON: {err}")))
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Local(_) => exit::OTHER,
            Error::Unreachable(_) => exit::UNAVAILABLE,
            Error::Refused(answer) => match answer.status {
                StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => exit::CONFLICT,
                StatusCode::TOO_MANY_REQUESTS => exit::UNAVAILABLE,
                status if status.is_client_error() => exit::REFUSED,
                status if status.is_server_error() => exit::UNAVAILABLE,
                _ => exit::OTHER,
            },
        }
    }

    /// What stderr shows: for a problem, its title, detail, type, correlation id and
    /// extensions (e.g. `current_state`, `allowed_actions`).
    pub fn describe(&self) -> String {
        let Error::Refused(answer) = self else { return format!("error: {self}") };
        let problem = answer
            .header(CONTENT_TYPE.as_str())
            .filter(|kind| kind.starts_with("application/problem+json"))
            .and_then(|_| serde_json::from_slice::<serde_json::Map<String, Value>>(&answer.body).ok());
        let Some(mut problem) = problem else {
            let body = String::from_utf8_lossy(&answer.body);
            let body: String = body.trim().chars().take(500).collect();
            return super::render::clean(&format!("error: the server answered {}: {body}", answer.status));
        };
        let mut take = |name: &str| problem.remove(name).map(|value| super::render::text(&value));
        let title = take("title").unwrap_or_else(|| answer.status.to_string());
        let detail = take("detail").unwrap_or_default();
        let kind = take("type").unwrap_or_default();
        let correlation_id = take("correlation_id")
            .or_else(|| answer.header("x-correlation-id").map(str::to_owned))
            .unwrap_or_default();
        problem.remove("status");
        let mut text = format!(
            "error: {} {title}: {detail}\n  type: {kind}\n  correlation id: {correlation_id}",
            answer.status.as_u16()
        );
        for (name, value) in &problem {
            text.push_str(&format!("\n  {name}: {value}"));
        }
        super::render::clean(&text)
    }
}

/// The events of a `text/event-stream` response, one at a time.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    /// What arrived after the last complete event.
    buffer: Vec<u8>,
}

/// One event of a stream: its `id`, and its `data` lines joined.
#[derive(Debug)]
pub struct StreamEvent {
    pub id: Option<String>,
    pub data: String,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream { response, buffer: Vec::new() }
    }

    /// The next event; `None` once the server closed the stream. Events end with a
    /// blank line; our server ends lines with `\n`.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, Error> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let value = |line: &'_ str, name: &str| {
                    let value = line.strip_prefix(name)?.strip_prefix(':')?;
                    Some(value.strip_prefix(' ').unwrap_or(value).to_owned())
                };
                let data: Vec<String> = block.lines().filter_map(|line| value(line, "data")).collect();
                // Without data it is a keep-alive comment.
                if !data.is_empty() {
                    let id = block.lines().find_map(|line| value(line, "id"));
                    return Ok(Some(StreamEvent { id, data: data.join("\n") }));
                }
                continue;
            }
            match self.response.chunk().await.map_err(|err| Error::Unreachable(describe(&err)))? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// `request` with `body` as its JSON body.
pub fn with_json(request: RequestBuilder, body: &impl serde::Serialize) -> Result<RequestBuilder, Error> {
    let body =
        serde_json::to_vec(body).map_err(|err| Error::Local(format!("cannot write the request: {err}")))?;
    Ok(request.header(CONTENT_TYPE, "application/json").body(body))
}

/// reqwest's error with its causes: "error sending request" alone does not say why.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
