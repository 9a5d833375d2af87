//! RFC 9457 problem details: the only error body the API sends.

use super::correlation;
use crate::service;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// What a 503 asks clients to wait before retrying, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// An error response. `kind` becomes the `type` URI; `extensions` are extra members.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    /// The internal cause of a 5xx, logged once and never sent.
    pub cause: Option<String>,
}

/// A problem's JSON body.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub(super) struct ProblemBody<'a> {
    /// `urn:switchyard:problem:` and the problem's kind, e.g. `not-found`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:switchyard:problem:[a-z-]+$")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// The request's `X-Correlation-Id`.
    correlation_id: String,
    /// Members some problems add, e.g. `current_state` and `allowed_actions`.
    #[serde(flatten)]
    extensions: &'a Map<String, Value>,
}

/// Carries a 5xx's cause to the correlation middleware, which logs it.
#[derive(Debug, Clone)]
pub(super) struct ProblemCause(pub String);

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem { status, kind, title, detail: detail.into(), extensions: Map::new(), cause: None }
    }

    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.into(), value);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// A generic 500; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed; see its log",
        )
        .caused_by(cause)
    }

    /// Keeps `cause` for the log, never sent.
    pub fn caused_by(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Whether a repeat of the request would get the same answer, so that it may be
    /// kept under an idempotency key. Server failures and contention are transient.
    pub fn is_final(&self) -> bool {
        self.status.is_client_error() && self.kind != "contention"
    }

    /// The JSON body, stamped with the current request's correlation id.
    pub fn body(&self) -> Vec<u8> {
        let body = ProblemBody {
            kind: format!("urn:switchyard:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            correlation_id: correlation::current(),
            extensions: &self.extensions,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        // Every 503 is passing: overload, a timeout, the database away.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ProblemCause(cause));
        }
        response
    }
}

impl From<service::Error> for Problem {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        let detail = err.to_string();
        let runtime_fault = err.is_runtime_fault();
        match err {
            E::InvalidModule(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-module", "Invalid module", detail)
            }
            E::VersionConflict { sha256, .. } => {
                Problem::new(StatusCode::CONFLICT, "version-conflict", "Version already deployed", detail)
                    .with("deployed_sha256", json!(sha256))
            }
            E::DefinitionNotFound(_)
            | E::VersionNotFound { .. }
            | E::InstanceNotFound(_)
            | E::MigrationNotFound(_)
            | E::TaskNotFound(_) => Problem::not_found(detail),
            E::ReportConflict(_) => {
                Problem::new(StatusCode::CONFLICT, "report-conflict", "Another result was reported", detail)
            }
            E::VersionPinned { .. } => Problem::new(
                StatusCode::CONFLICT,
                "version-pinned",
                "Version pinned for new instances",
                detail,
            ),
            E::VersionNotRetired { .. } => {
                Problem::new(StatusCode::CONFLICT, "version-not-retired", "Version not retired", detail)
            }
            E::VersionInUse { running, .. } => {
                Problem::new(StatusCode::CONFLICT, "version-in-use", "Version still in use", detail)
                    .with("running_instances", json!(running))
            }
            E::NoMigrationPath { .. } => {
                Problem::new(StatusCode::CONFLICT, "no-migration-path", "No migration path", detail)
            }
            E::VersionRetired { .. } | E::VersionGone => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "version-retired", "Version retired", detail)
            }
            E::UnknownAction { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-action", "Unknown action", detail)
            }
            E::NotAllowed { current_state, allowed_actions, .. } => Problem::new(
                StatusCode::CONFLICT,
                "action-not-allowed",
                "Action not allowed in this state",
                detail,
            )
            .with("current_state", json!(current_state))
            .with("allowed_actions", json!(allowed_actions)),
            E::PreconditionFailed { current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                detail,
            )
            .with("current_etag", json!(super::instances::etag(current))),
            E::Rejected { code, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                "Rejected by the definition",
                detail,
            )
            .with("code", json!(code)),
            E::Finished(_) => {
                Problem::new(StatusCode::CONFLICT, "instance-finished", "Instance finished", detail)
            }
            E::EffectClosed => Problem::new(StatusCode::CONFLICT, "effect-closed", "Effect closed", detail),
            E::EventDuplicate => {
                Problem::new(StatusCode::CONFLICT, "event-duplicate", "Event received already", detail)
            }
            E::BadCallback(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-callback",
                "Invalid callback_url",
                detail,
            ),
            E::BadEvent(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-event", "Invalid event", detail)
            }
            // The runtime failing around a guest call is the host's fault: wasmtime's
            // words for it go to the log only.
            E::Guest(_) if runtime_fault => Problem::internal(format!("{err:?}")),
            // The definition's own fault, not the host's: the detail names it (a trap by
            // its code).
            E::Guest(_) | E::BadOutcome(_) | E::BadEffects(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "definition-failed",
                "The definition failed; the instance is unchanged",
                detail,
            ),
            E::Forbidden(forbidden) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
                .with("required_role", json!(forbidden.required.as_str()))
                .with("role", json!(forbidden.role.as_str())),
            E::Contention => Problem::new(StatusCode::CONFLICT, "contention", "Contention", detail),
            E::KeyTaken => {
                Problem::new(StatusCode::CONFLICT, "idempotency-key-in-use", "Idempotency key in use", detail)
            }
            E::StoreUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
                "the database failed for a moment and nothing was written; retry",
            )
            .caused_by(format!("{err:?}")),
            E::OutcomeUnknown(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "outcome-unknown",
                "Outcome unknown",
                "the database was lost as the change committed, so it may or may not have been made; \
                 retry with the same Idempotency-Key to learn which",
            )
            .caused_by(format!("{err:?}")),
            E::Store(_) | E::Internal(_) => Problem::internal(format!("{err:?}")),
        }
    }
}

#[cfg(test)]
mod tests;
