//! `document-processing`, version 1: an uploaded document is validated, formatted and
//! published.
//!
//! Validation or formatting can fail with a reason; a failed document is retried at the
//! stage that failed. An admin can cancel the document at any point before it is
//! published. The data document keeps the document's URL, the number of retries, the
//! current failure (only while FAILED) and a log of every accepted action.

use serde_json::Value;
use switchyard_guest::prelude::*;

const UPLOADED: &str = "UPLOADED";
const VALIDATING: &str = "VALIDATING";
const FORMATTING: &str = "FORMATTING";
const PUBLISHED: &str = "PUBLISHED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// The definition.
#[derive(Debug)]
pub struct DocumentProcessing;

/// What a client starts an instance with: `{"document_url": "..."}`.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub document_url: String,
}

/// The instance's data document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The document being processed, as uploaded (surrounding whitespace removed).
    pub document_url: String,
    /// How often a failed stage was retried over the instance's life.
    pub retries: u32,
    /// Which stage failed and why; set only while the instance is FAILED.
    pub failure: Option<Failure>,
    /// Every accepted action, oldest first.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub stage: Stage,
    pub reason: String,
}

/// A stage that can fail, and that `retry` goes back to. Serialized as its state's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Stage {
    Validating,
    Formatting,
}

impl Stage {
    fn of(state: &str) -> Option<Stage> {
        match state {
            VALIDATING => Some(Stage::Validating),
            FORMATTING => Some(Stage::Formatting),
            _ => None,
        }
    }

    fn state(self) -> &'static str {
        match self {
            Stage::Validating => VALIDATING,
            Stage::Formatting => FORMATTING,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stage::Validating => "validation",
            Stage::Formatting => "formatting",
        }
    }
}

/// One accepted action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub action: String,
    pub from: String,
    pub to: String,
    /// When the host accepted the action (its `Context::now_ms`).
    pub at_ms: i64,
    /// The reason given to `fail` or `cancel`, if any.
    pub reason: Option<String>,
}

impl Definition for DocumentProcessing {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("document-processing", 1)
            .state(UPLOADED, "The document was uploaded and waits to be validated.")
            .state(VALIDATING, "The document is being validated.")
            .state(FORMATTING, "The validated document is being formatted.")
            .terminal(PUBLISHED, TerminalStatus::Completed, "The document was published.")
            .state(FAILED, "Validation or formatting failed; the failed stage can be retried.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the processing.")
            .initial(UPLOADED)
            .action("validate", &[UPLOADED], &[VALIDATING], "Start validating the document.")
            .action("format", &[VALIDATING], &[FORMATTING], "The document is valid: start formatting it.")
            .action("publish", &[FORMATTING], &[PUBLISHED], "Formatting is done: publish the document.")
            .action(
                "fail",
                &[VALIDATING, FORMATTING],
                &[FAILED],
                "The current stage failed; payload {\"reason\": \"...\"}.",
            )
            .action("retry", &[FAILED], &[VALIDATING, FORMATTING], "Go back to the stage that failed.")
            .admin_action(
                "cancel",
                &[UPLOADED, VALIDATING, FORMATTING, FAILED],
                &[CANCELLED],
                "Stop processing; optional payload {\"reason\": \"...\"}.",
            )
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let document_url = input.document_url.trim();
        if document_url.is_empty() {
            return Err(Rejection::new("invalid_input", "document_url must not be empty"));
        }
        let data = Data { document_url: document_url.into(), retries: 0, failure: None, steps: Vec::new() };
        Ok(Transition::to(UPLOADED, data).with_message("Document uploaded"))
    }

    fn on_action(ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let ActionCall { state, mut data, action, payload } = call;
        let (to, reason, message): (&str, Option<String>, String) = match (action.as_str(), state.as_str()) {
            ("validate", UPLOADED) => (VALIDATING, None, "Validating the document".into()),
            ("format", VALIDATING) => (FORMATTING, None, "Document is valid; formatting it".into()),
            ("publish", FORMATTING) => (PUBLISHED, None, "Document published".into()),
            ("fail", _) => {
                let stage = Stage::of(&state).ok_or_else(|| not_allowed(&action, &state))?;
                let reason = reason(&payload)?.ok_or_else(|| {
                    Rejection::new(
                        "reason_required",
                        "fail needs a payload {\"reason\": \"...\"} with a non-empty reason",
                    )
                })?;
                let message = format!("The {} failed: {reason}", stage.label());
                data.failure = Some(Failure { stage, reason: reason.clone() });
                (FAILED, Some(reason), message)
            }
            ("retry", FAILED) => {
                let failure = data.failure.take().ok_or_else(|| {
                    Rejection::new("invalid_data", "the instance is FAILED but records no failure")
                })?;
                data.retries = data.retries.saturating_add(1);
                let message = format!("Retrying the {} (retry {})", failure.stage.label(), data.retries);
                (failure.stage.state(), None, message)
            }
            ("cancel", _) => {
                let reason = reason(&payload)?;
                let message = match &reason {
                    Some(reason) => format!("Cancelled: {reason}"),
                    None => "Cancelled".into(),
                };
                data.failure = None;
                (CANCELLED, reason, message)
            }
            _ => return Err(not_allowed(&action, &state)),
        };
        data.steps.push(Step { action, from: state, to: to.into(), at_ms: ctx.now_ms, reason });
        Ok(Transition::to(to, data).with_message(message))
    }
}

/// The `reason` of a `{"reason": "..."}` payload; `None` when the payload is `null` or the
/// reason is absent, `null` or blank.
fn reason(payload: &Value) -> Result<Option<String>, Rejection> {
    let invalid = |reason| Err(Rejection::new("invalid_payload", reason));
    match payload {
        Value::Null => Ok(None),
        Value::Object(fields) => match fields.get("reason") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(reason)) if reason.trim().is_empty() => Ok(None),
            Some(Value::String(reason)) => Ok(Some(reason.trim().into())),
            Some(_) => invalid("reason must be a string"),
        },
        _ => invalid("the payload must be an object like {\"reason\": \"...\"}"),
    }
}

/// For calls the host never makes, because the manifest does not allow them.
fn not_allowed(action: &str, state: &str) -> Rejection {
    Rejection::new("not_allowed", format!("{action} is not allowed in state {state}"))
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(DocumentProcessing);
