//! Terminal callbacks, signed per Standard Webhooks 1.0: `webhook-id` (the effect's id,
//! the same on every retry), `webhook-timestamp` (Unix seconds) and `webhook-signature:
//! v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>` with the configured secret.
//! 2xx delivers it; 410 stops it; anything else is retried with backoff until the
//! retry budget is spent. Every attempt shows in the effect (diagnostics).

use super::{RetryPolicy, Settings, millis, random, record};
use crate::model::{Effect, EffectStatus, Timestamp};
use crate::service::Service;
use crate::store::Progress;
use crate::telemetry;
use base64::Engine;
use hmac::Mac;
use std::time::Duration;

/// `[callbacks]` as the executor uses it.
#[derive(Debug, Clone)]
pub struct Callbacks {
    /// The key behind the configured `whsec_` secret.
    pub secret: Option<Vec<u8>>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl Callbacks {
    /// Reads a `whsec_` + base64 secret.
    pub fn secret(text: &str) -> Result<Vec<u8>, String> {
        let encoded = text.strip_prefix("whsec_").ok_or("a callback secret starts with whsec_")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| format!("the callback secret after whsec_ is not base64: {err}"))
    }
}

/// `v1,<signature>` of `body` sent as `id` at `timestamp`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Makes the next attempt of `effect`'s callback and records how it went.
pub(super) async fn deliver(
    service: &Service,
    settings: &Settings,
    client: &reqwest::Client,
    effect: &Effect,
) {
    let callbacks = &settings.callbacks;
    let attempt = effect.attempts + 1;
    let body = effect.input.clone().unwrap_or_default();
    let url = effect.name.clone().unwrap_or_default();
    let now = Timestamp::now();
    let timestamp = now.0 / 1000;
    let mut request = client
        .post(&url)
        .timeout(callbacks.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &effect.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = &callbacks.secret {
        request =
            request.header("webhook-signature", signature(secret, &effect.id, timestamp, body.as_bytes()));
    }
    let answer = request.body(body).send().await;
    metrics::counter!(telemetry::EFFECT_ATTEMPTS, "kind" => effect.kind.as_str()).increment(1);
    let delivered = answer.as_ref().is_ok_and(|response| response.status().is_success());
    let (status, last_error, result) = match answer {
        // The last failure, if any, stays on view beside the success.
        Ok(response) if response.status().is_success() => (
            EffectStatus::Done,
            effect.last_error.clone(),
            Some(format!("{{\"delivered\":true,\"status\":{}}}", response.status().as_u16())),
        ),
        Ok(response) if response.status() == reqwest::StatusCode::GONE => (
            EffectStatus::Done,
            Some(format!("attempt {attempt}: the receiver answered 410 Gone; not retried")),
            Some("{\"delivered\":false,\"status\":410}".into()),
        ),
        Ok(response) => {
            retry_or_give_up(callbacks, attempt, format!("the receiver answered {}", response.status()))
        }
        Err(err) => retry_or_give_up(callbacks, attempt, format!("no answer: {err}")),
    };
    let due_at = match status {
        EffectStatus::Pending => {
            Timestamp(now.0.saturating_add(millis(callbacks.retry.backoff(attempt, random()))))
        }
        _ => now,
    };
    if status == EffectStatus::Done {
        let outcome = if delivered { "delivered" } else { "undelivered" };
        metrics::counter!(telemetry::EFFECTS, "kind" => effect.kind.as_str(), "outcome" => outcome)
            .increment(1);
    }
    let progress = Progress { status, attempts: attempt, due_at, last_error, result };
    record(service, effect, &progress).await;
}

fn retry_or_give_up(
    callbacks: &Callbacks,
    attempt: u32,
    reason: String,
) -> (EffectStatus, Option<String>, Option<String>) {
    if attempt >= callbacks.retry.max_attempts {
        let given_up = format!("attempt {attempt}: {reason}; the retry budget is spent");
        (EffectStatus::Done, Some(given_up), Some("{\"delivered\":false}".into()))
    } else {
        (EffectStatus::Pending, Some(format!("attempt {attempt}: {reason}")), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_id_timestamp_and_body() {
        // The example of the Standard Webhooks specification.
        let secret = Callbacks::secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
        let body = br#"{"test": 2432232314}"#;
        let signed = signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(Callbacks::secret("MfKQ9r8").is_err() && Callbacks::secret("whsec_!!").is_err());
    }
}
