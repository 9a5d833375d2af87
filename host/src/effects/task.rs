//! Tasks: one HTTP request per attempt to the participant bound to the task's name,
//! its answer classified, retries scheduled with backoff and jitter.

use super::{Settings, millis, record};
use crate::model::{Effect, EffectStatus, Timestamp};
use crate::service::Service;
use crate::store::Progress;
use crate::telemetry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use switchyard_guest::{FailureKind, Received, TaskError};

/// The most of a participant's answer kept in a failure.
const BODY_LIMIT: usize = 2048;

/// Where tasks go, and the defaults of everything a definition or binding leaves out.
#[derive(Debug, Clone)]
pub struct Participants {
    /// Task name → binding.
    pub bindings: HashMap<String, Binding>,
    /// Where participants report on tasks they answered with 202.
    pub public_url: String,
    pub attempt_timeout: Duration,
    pub report_timeout: Duration,
    pub retry: RetryPolicy,
}

/// `[tasks."name"]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub url: String,
    /// Overrides the definition's value.
    pub attempt_timeout_ms: Option<u64>,
    /// Overrides the definition's values, field by field.
    #[serde(default)]
    pub retry: RetryOverride,
    #[serde(default)]
    pub headers: HashMap<String, String>,
}

/// Retry settings as a definition or a binding gives them: each field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    pub max_attempts: Option<u32>,
    pub initial_interval_ms: Option<u64>,
    pub backoff_coefficient: Option<f64>,
    pub max_interval_ms: Option<u64>,
}

/// A task's effective retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
}

impl RetryPolicy {
    /// SPEC §3's defaults.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        initial_interval: Duration::from_secs(1),
        backoff_coefficient: 2.0,
        max_interval: Duration::from_secs(60),
    };

    pub fn overridden(self, by: &RetryOverride) -> RetryPolicy {
        RetryPolicy {
            max_attempts: by.max_attempts.unwrap_or(self.max_attempts).max(1),
            initial_interval: by.initial_interval_ms.map_or(self.initial_interval, Duration::from_millis),
            backoff_coefficient: by
                .backoff_coefficient
                .filter(|coefficient| coefficient.is_finite() && *coefficient >= 1.0)
                .unwrap_or(self.backoff_coefficient),
            max_interval: by.max_interval_ms.map_or(self.max_interval, Duration::from_millis),
        }
    }

    /// The wait after failed attempt `attempt` (1-based): exponential up to the
    /// maximum, then "equal jitter" (between half and all of it), so that many tasks
    /// failing together do not all come back at once.
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exponent);
        let capped = base.min(self.max_interval.as_secs_f64());
        Duration::from_secs_f64(capped * (0.5 + 0.5 * random.clamp(0.0, 1.0)))
    }
}

/// The settings a definition gave its task, as the outbox keeps them.
#[derive(Debug, Default, Deserialize)]
struct TaskOptions {
    #[serde(default)]
    retry: Option<RetryOverride>,
    attempt_timeout_ms: Option<u64>,
    report_timeout_ms: Option<u64>,
}

/// The one HTTP client of every participant: connections are kept and reused; `https://`
/// is verified against the public roots and `trusted`.
pub(super) fn client(trusted: &[reqwest::Certificate]) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        // A participant's redirect is an answer, not an instruction to follow.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60));
    let builder = trusted.iter().cloned().fold(builder, reqwest::ClientBuilder::add_root_certificate);
    builder.build().unwrap_or_else(|err| {
        tracing::error!(%err, "cannot build the participants' HTTP client; using one without extra roots");
        reqwest::Client::default()
    })
}

/// What one attempt came to.
enum Answer {
    Succeeded(serde_json::Value),
    /// 202: the participant reports later.
    Accepted,
    /// Worth trying again: 408, 429, 5xx, no connection, a timeout.
    Retryable {
        kind: FailureKind,
        status: Option<u16>,
        body: Option<String>,
    },
    /// Any other 4xx (or 3xx): the participant refused.
    Refused {
        status: u16,
        body: String,
    },
}

/// Makes the next attempt of `effect`'s task. The result to deliver and the attempts
/// made, if the task is over; `None` if it goes on (retried later, or reported later),
/// progress recorded.
pub(super) async fn attempt(
    service: &Service,
    settings: &Settings,
    client: &reqwest::Client,
    effect: &Effect,
) -> Option<(Received, u32)> {
    let participants = &settings.participants;
    let options: TaskOptions = serde_json::from_str(&effect.options).unwrap_or_default();
    let name = effect.name.as_deref().unwrap_or_default();
    let failed = |kind, status, body, attempts| {
        let error = TaskError { kind, status, body, attempts };
        Some((Received::TaskFailed { key: effect.key.clone(), error }, attempts))
    };
    let Some(binding) = participants.bindings.get(name) else {
        return failed(FailureKind::Unbound, None, None, effect.attempts);
    };
    let definition_retry = options.retry.unwrap_or_default();
    let retry = participants.retry.overridden(&definition_retry).overridden(&binding.retry);
    let attempt_timeout = binding
        .attempt_timeout_ms
        .or(options.attempt_timeout_ms)
        .map_or(participants.attempt_timeout, Duration::from_millis);
    let attempt = effect.attempts + 1;
    let answer = send(client, participants, binding, effect, attempt, attempt_timeout).await;
    metrics::counter!(telemetry::EFFECT_ATTEMPTS, "kind" => effect.kind.as_str()).increment(1);
    let now = Timestamp::now();
    match answer {
        Answer::Succeeded(output) => {
            Some((Received::TaskSucceeded { key: effect.key.clone(), output }, attempt))
        }
        Answer::Refused { status, body } => failed(FailureKind::Http, Some(status), Some(body), attempt),
        Answer::Accepted => {
            let report_timeout =
                options.report_timeout_ms.map_or(participants.report_timeout, Duration::from_millis);
            let progress = Progress {
                status: EffectStatus::Waiting,
                attempts: attempt,
                due_at: Timestamp(now.0.saturating_add(millis(report_timeout))),
                last_error: None,
                result: None,
            };
            record(service, effect, &progress).await;
            None
        }
        Answer::Retryable { kind, status, body } if attempt >= retry.max_attempts => {
            let kind = if kind == FailureKind::Timeout {
                kind
            } else if status.is_none() {
                FailureKind::Unreachable
            } else {
                FailureKind::Exhausted
            };
            failed(kind, status, body, attempt)
        }
        Answer::Retryable { kind, status, body } => {
            let wait = retry.backoff(attempt, random());
            let reason = match (kind, status) {
                (FailureKind::Timeout, _) => "the attempt timed out".to_owned(),
                (_, Some(status)) => format!("the participant answered {status}"),
                _ => body.unwrap_or_else(|| "no connection".into()),
            };
            let progress = Progress {
                status: EffectStatus::Pending,
                attempts: attempt,
                due_at: Timestamp(now.0.saturating_add(millis(wait))),
                last_error: Some(format!("attempt {attempt}: {reason}")),
                result: None,
            };
            tracing::info!(attempt, ?wait, %reason, "task attempt failed; retrying");
            record(service, effect, &progress).await;
            None
        }
    }
}

async fn send(
    client: &reqwest::Client,
    participants: &Participants,
    binding: &Binding,
    effect: &Effect,
    attempt: u32,
    timeout: Duration,
) -> Answer {
    let input: serde_json::Value =
        effect.input.as_deref().and_then(|input| serde_json::from_str(input).ok()).unwrap_or_default();
    let body = serde_json::json!({
        "task_id": effect.id,
        "task": effect.name,
        "instance_id": effect.instance_id.to_string(),
        "definition": effect.definition,
        "definition_version": effect.definition_version,
        "attempt": attempt,
        "input": input,
        "report_url": format!("{}/v1/tasks/{}/result", participants.public_url.trim_end_matches('/'), effect.id),
    });
    let request = client
        .post(&binding.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", &effect.id)
        .header("x-correlation-id", &effect.id)
        .body(body.to_string());
    let mut request = request.build().map_err(|err| err.to_string());
    if let Ok(built) = &mut request {
        for (name, value) in &binding.headers {
            // The binding's headers replace the host's, they are not sent beside them.
            if let (Ok(name), Ok(value)) = (reqwest::header::HeaderName::try_from(name), value.parse()) {
                built.headers_mut().insert(name, value);
            }
        }
    }
    let request = match request {
        Ok(request) => client.execute(request),
        // A binding whose URL cannot be sent to never reaches its participant.
        Err(err) => {
            return Answer::Retryable { kind: FailureKind::Unreachable, status: None, body: Some(err) };
        }
    };
    let response = match request.await {
        Ok(response) => response,
        Err(err) => return lost(&err),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => return lost(&err),
    };
    let code = status.as_u16();
    if code == 202 {
        Answer::Accepted
    } else if status.is_success() {
        // No body is `null`; a body that is not JSON is kept as a string.
        let output = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Answer::Succeeded(output)
    } else if code == 408 || code == 429 || status.is_server_error() {
        Answer::Retryable { kind: FailureKind::Exhausted, status: Some(code), body: Some(truncated(text)) }
    } else {
        Answer::Refused { status: code, body: truncated(text) }
    }
}

/// An attempt that got no whole answer: it timed out, or the connection failed.
fn lost(err: &reqwest::Error) -> Answer {
    if err.is_timeout() {
        Answer::Retryable { kind: FailureKind::Timeout, status: None, body: None }
    } else {
        Answer::Retryable { kind: FailureKind::Unreachable, status: None, body: Some(chain(err)) }
    }
}

fn truncated(mut text: String) -> String {
    if text.len() > BODY_LIMIT {
        let mut cut = BODY_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// An error with its causes, which reqwest does not print by itself.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// In [0, 1): jitter needs no more than a fresh UUID's randomness.
pub(super) fn random() -> f64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    (high >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy::DEFAULT;
        assert_eq!(policy.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(policy.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(policy.backoff(30, 1.0), Duration::from_secs(60), "capped");
        for _ in 0..100 {
            let wait = policy.backoff(2, random());
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2), "{wait:?}");
        }
    }

    #[test]
    fn bindings_override_definitions_field_by_field() {
        let definition =
            RetryOverride { max_attempts: Some(3), initial_interval_ms: Some(10), ..Default::default() };
        let binding =
            RetryOverride { max_attempts: Some(7), backoff_coefficient: Some(0.5), ..Default::default() };
        let policy = RetryPolicy::DEFAULT.overridden(&definition).overridden(&binding);
        assert_eq!(policy.max_attempts, 7);
        assert_eq!(policy.initial_interval, Duration::from_millis(10));
        assert_eq!(policy.backoff_coefficient, 2.0, "a coefficient below 1 is ignored");
        assert_eq!(policy.max_interval, Duration::from_secs(60));
    }
}
