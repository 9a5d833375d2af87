//! `document-processing`, version 2: an uploaded document is validated, formatted,
//! reviewed and published.
//!
//! # What changed from version 1
//!
//! - **Review.** A new state `REVIEWING` sits between `FORMATTING` and `PUBLISHED`.
//!   Version 1's `publish` is gone: `submit` sends the formatted document to review
//!   (`FORMATTING -> REVIEWING`), `approve` publishes it (`REVIEWING -> PUBLISHED`, payload
//!   `{"reviewer": "..."}` required) and `reject` sends it back to formatting
//!   (`REVIEWING -> FORMATTING`, payload `{"reason": "..."}` required), counting the
//!   rejection. `cancel` (admin-only) is legal in `REVIEWING` too; `fail` is not, since a
//!   review that finds problems rejects instead.
//! - **Data.** `document_url` became `document.url`, `retries` became `attempts`, and
//!   `rejections` and `reviewer` (set by `approve`) are new. A step's `reason` became
//!   `detail`: the reason given to `fail`, `reject` or `cancel`, or the reviewer of
//!   `approve`. `failure` and the step log are otherwise unchanged.
//! - The input is unchanged: `{"document_url": "..."}`.
//!
//! # Migrating version 1 instances
//!
//! The manifest declares `migrates_from(1)`, and [`Definition::migrate`] converts a
//! version 1 instance as follows:
//!
//! - A `FAILED` instance is not migrated: it is refused with `failed_on_v1`, whatever its
//!   data. Version 2 changed how a failed document is retried (retries count as
//!   `attempts`, and the document goes through review on the way back to publishing), so
//!   a document that failed under version 1 must be retried or cancelled under version 1.
//!   Once it runs again it can be migrated.
//! - Every other version 1 state exists in version 2 with the same meaning, so the state
//!   is kept: `UPLOADED`, `VALIDATING` and `FORMATTING`, and also the terminal `PUBLISHED`
//!   and `CANCELLED` (whether finished instances may migrate is the host's decision, not
//!   this module's). A running `FORMATTING` instance will go through review before it is
//!   published. Any other state is refused with `unknown_state`.
//! - The data is read with a private copy of version 1's data type (version 1 is frozen,
//!   and this crate does not depend on it); data of another shape is refused with
//!   `invalid_data`. `retries` becomes `attempts`, `rejections` starts at 0, `reviewer` is
//!   empty, there is no failure, every step is carried over, and a `migrate` step (from
//!   and to the instance's state, at the host's clock) is appended.
//! - Data that version 1 could never have produced is refused with `inconsistent_data`
//!   rather than guessed at: a failure recorded outside `FAILED`, or an empty document URL.
//! - Instances of any version other than 1 are refused with `no_migration`.

use serde_json::Value;
use switchyard_guest::prelude::*;

const VERSION: u32 = 2;

const UPLOADED: &str = "UPLOADED";
const VALIDATING: &str = "VALIDATING";
const FORMATTING: &str = "FORMATTING";
const REVIEWING: &str = "REVIEWING";
const PUBLISHED: &str = "PUBLISHED";
const FAILED: &str = "FAILED";
const CANCELLED: &str = "CANCELLED";

/// The definition.
#[derive(Debug)]
pub struct DocumentProcessingV2;

/// What a client starts an instance with: `{"document_url": "..."}`, as in version 1.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub document_url: String,
}

/// The instance's data document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub document: Document,
    /// How often a failed stage was retried over the instance's life.
    pub attempts: u32,
    /// How often review sent the document back to formatting.
    pub rejections: u32,
    /// Who approved the document; set once it is published.
    pub reviewer: Option<String>,
    /// Which stage failed and why; set only while the instance is FAILED.
    pub failure: Option<Failure>,
    /// Every accepted action (and the migration from version 1, if any), oldest first.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// The document being processed, as uploaded (surrounding whitespace removed).
    pub url: String,
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
    /// The reason given to `fail`, `reject` or `cancel`, the reviewer of `approve`, or
    /// the version a `migrate` came from.
    pub detail: Option<String>,
}

impl Definition for DocumentProcessingV2 {
    type Input = Input;
    type Data = Data;

    fn manifest() -> Manifest {
        Manifest::builder("document-processing", VERSION)
            .state(UPLOADED, "The document was uploaded and waits to be validated.")
            .state(VALIDATING, "The document is being validated.")
            .state(FORMATTING, "The validated document is being formatted.")
            .state(REVIEWING, "The formatted document waits for a reviewer's approval.")
            .terminal(
                PUBLISHED,
                TerminalStatus::Completed,
                "A reviewer approved the document; it was published.",
            )
            .state(FAILED, "Validation or formatting failed; the failed stage can be retried.")
            .terminal(CANCELLED, TerminalStatus::Cancelled, "An admin cancelled the processing.")
            .initial(UPLOADED)
            .action("validate", &[UPLOADED], &[VALIDATING], "Start validating the document.")
            .action("format", &[VALIDATING], &[FORMATTING], "The document is valid: start formatting it.")
            .action(
                "submit",
                &[FORMATTING],
                &[REVIEWING],
                "Formatting is done: submit the document for review.",
            )
            .action(
                "approve",
                &[REVIEWING],
                &[PUBLISHED],
                "Approve and publish the document; payload {\"reviewer\": \"...\"}.",
            )
            .action(
                "reject",
                &[REVIEWING],
                &[FORMATTING],
                "Send the document back to formatting; payload {\"reason\": \"...\"}.",
            )
            .action(
                "fail",
                &[VALIDATING, FORMATTING],
                &[FAILED],
                "The current stage failed; payload {\"reason\": \"...\"}.",
            )
            .action("retry", &[FAILED], &[VALIDATING, FORMATTING], "Go back to the stage that failed.")
            .admin_action(
                "cancel",
                &[UPLOADED, VALIDATING, FORMATTING, REVIEWING, FAILED],
                &[CANCELLED],
                "Stop processing; optional payload {\"reason\": \"...\"}.",
            )
            .migrates_from(1)
            .build()
    }

    fn init(_ctx: &Context, input: Input) -> Result<Transition<Data>, Rejection> {
        let url = input.document_url.trim();
        if url.is_empty() {
            return Err(Rejection::new("invalid_input", "document_url must not be empty"));
        }
        let data = Data {
            document: Document { url: url.into() },
            attempts: 0,
            rejections: 0,
            reviewer: None,
            failure: None,
            steps: Vec::new(),
        };
        Ok(Transition::to(UPLOADED, data).with_message("Document uploaded"))
    }

    fn on_action(ctx: &Context, call: ActionCall<Data>) -> Result<Transition<Data>, Rejection> {
        let ActionCall { state, mut data, action, payload } = call;
        let (to, detail, message): (&str, Option<String>, String) = match (action.as_str(), state.as_str()) {
            ("validate", UPLOADED) => (VALIDATING, None, "Validating the document".into()),
            ("format", VALIDATING) => (FORMATTING, None, "Document is valid; formatting it".into()),
            ("submit", FORMATTING) => (REVIEWING, None, "Document formatted; waiting for review".into()),
            ("approve", REVIEWING) => {
                let reviewer = required(&payload, &action, "reviewer")?;
                let message = format!("Approved by {reviewer}; document published");
                data.reviewer = Some(reviewer.clone());
                (PUBLISHED, Some(reviewer), message)
            }
            ("reject", REVIEWING) => {
                let reason = required(&payload, &action, "reason")?;
                data.rejections = data.rejections.saturating_add(1);
                let message = format!("Rejected in review (rejection {}): {reason}", data.rejections);
                (FORMATTING, Some(reason), message)
            }
            ("fail", _) => {
                let stage = Stage::of(&state).ok_or_else(|| not_allowed(&action, &state))?;
                let reason = required(&payload, &action, "reason")?;
                let message = format!("The {} failed: {reason}", stage.label());
                data.failure = Some(Failure { stage, reason: reason.clone() });
                (FAILED, Some(reason), message)
            }
            ("retry", FAILED) => {
                let failure = data.failure.take().ok_or_else(|| {
                    Rejection::new("invalid_data", "the instance is FAILED but records no failure")
                })?;
                data.attempts = data.attempts.saturating_add(1);
                let message = format!("Retrying the {} (attempt {})", failure.stage.label(), data.attempts);
                (failure.stage.state(), None, message)
            }
            ("cancel", UPLOADED | VALIDATING | FORMATTING | REVIEWING | FAILED) => {
                let reason = text(&payload, "reason")?;
                let message = match &reason {
                    Some(reason) => format!("Cancelled: {reason}"),
                    None => "Cancelled".into(),
                };
                data.failure = None;
                (CANCELLED, reason, message)
            }
            _ => return Err(not_allowed(&action, &state)),
        };
        data.steps.push(Step { action, from: state, to: to.into(), at_ms: ctx.now_ms, detail });
        Ok(Transition::to(to, data).with_message(message))
    }

    fn migrate(
        ctx: &Context,
        from_version: u32,
        state: String,
        data: Value,
    ) -> Result<(String, Data), Rejection> {
        if from_version != 1 {
            return Err(Rejection::new(
                "no_migration",
                format!(
                    "version {VERSION} migrates instances of version 1 only, not of version {from_version}"
                ),
            ));
        }
        let to = v1::state_in_v2(&state)
            .ok_or_else(|| Rejection::new("unknown_state", format!("version 1 has no state {state:?}")))?;
        if to == FAILED {
            return Err(Rejection::new(
                "failed_on_v1",
                "a FAILED version 1 instance is not migrated: version 2 retries a failed document \
                 differently (counting attempts, and with review on the way back), so retry or \
                 cancel it under version 1; once it runs again it can be migrated",
            ));
        }
        let old: v1::Data = serde_json::from_value(data)
            .map_err(|err| Rejection::new("invalid_data", format!("not version 1 data: {err}")))?;
        let inconsistent = |reason: String| Err(Rejection::new("inconsistent_data", reason));
        if old.document_url.trim().is_empty() {
            return inconsistent("the document URL is empty".into());
        }
        if old.failure.is_some() {
            return inconsistent(format!("the instance is {state} but records a failure"));
        }
        let mut steps: Vec<Step> = old.steps.into_iter().map(Step::from).collect();
        steps.push(Step {
            action: "migrate".into(),
            from: state,
            to: to.into(),
            at_ms: ctx.now_ms,
            detail: Some(format!("from version {from_version} to version {VERSION}")),
        });
        let data = Data {
            document: Document { url: old.document_url },
            attempts: old.retries,
            rejections: 0,
            reviewer: None,
            failure: None,
            steps,
        };
        Ok((to.into(), data))
    }
}

/// Version 1's data document, exactly as version 1 writes it. A private copy rather than
/// a dependency: version 1 is deployed, so this shape never changes.
mod v1 {
    use super::{CANCELLED, FAILED, FORMATTING, PUBLISHED, UPLOADED, VALIDATING};
    use serde::Deserialize;

    /// The version 2 state a version 1 state becomes; `None` for a state version 1 does
    /// not have. `FAILED` is a known state here, though `migrate` then refuses it.
    pub(crate) fn state_in_v2(state: &str) -> Option<&'static str> {
        [UPLOADED, VALIDATING, FORMATTING, PUBLISHED, FAILED, CANCELLED]
            .into_iter()
            .find(|&known| known == state)
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Data {
        pub document_url: String,
        pub retries: u32,
        pub failure: Option<Failure>,
        pub steps: Vec<Step>,
    }

    /// Read only to check its shape: a failure is never carried over, since `FAILED`
    /// instances are not migrated and a failure anywhere else is inconsistent.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "read only to check version 1's shape")]
    pub(crate) struct Failure {
        pub stage: Stage,
        pub reason: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    pub(crate) enum Stage {
        Validating,
        Formatting,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Step {
        pub action: String,
        pub from: String,
        pub to: String,
        pub at_ms: i64,
        pub reason: Option<String>,
    }
}

impl From<v1::Step> for Step {
    fn from(step: v1::Step) -> Step {
        let v1::Step { action, from, to, at_ms, reason } = step;
        Step { action, from, to, at_ms, detail: reason }
    }
}

/// The trimmed text of `field` in an object payload; `None` when the payload is `null` or
/// the field is absent, `null` or blank.
fn text(payload: &Value, field: &str) -> Result<Option<String>, Rejection> {
    let invalid = |reason: String| Err(Rejection::new("invalid_payload", reason));
    match payload {
        Value::Null => Ok(None),
        Value::Object(fields) => match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.trim().into())),
            Some(_) => invalid(format!("{field} must be a string")),
        },
        _ => invalid(format!("the payload must be an object like {{\"{field}\": \"...\"}}")),
    }
}

/// Like [`text`], but a missing value is refused with code `<field>_required`.
fn required(payload: &Value, action: &str, field: &str) -> Result<String, Rejection> {
    text(payload, field)?.ok_or_else(|| {
        Rejection::new(
            format!("{field}_required"),
            format!("{action} needs a payload {{\"{field}\": \"...\"}} with a non-empty {field}"),
        )
    })
}

/// For calls the host never makes, because the manifest does not allow them.
fn not_allowed(action: &str, state: &str) -> Rejection {
    Rejection::new("not_allowed", format!("{action} is not allowed in state {state}"))
}

#[cfg(test)]
mod tests;

switchyard_guest::export!(DocumentProcessingV2);
