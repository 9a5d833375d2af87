//! The shared behaviour of single-task definitions, tested once: the definitions built
//! on it test only what is their own (task, input, id member, validation).

use super::*;
use crate::abi::{Effect, StateDecl};
use crate::testing::{Machine, Refusal};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Letter {
    to: String,
    pages: u32,
}

#[derive(Debug)]
struct Post;

impl SingleTask for Post {
    type Input = Letter;
    type Params = Letter;
    const NAME: &'static str = "post-letter";
    const VERSION: u32 = 3;
    const RUNNING: &'static str = "POSTING";
    const KEY: &'static str = "post";
    const TASK: &'static str = "mail.post";
    const ID: &'static str = "receipt_id";
    const TEXTS: Texts = Texts {
        running: "Posting the letter",
        completed: "The letter is posted.",
        succeeded: "Letter posted",
        failed: "The letter could not be posted",
        unconfirmed: "The post office did not confirm",
        cancelled: "An admin cancelled the letter.",
        no_force_complete: "a letter is posted only with a receipt; cancel it instead",
    };

    fn validate(mut letter: Letter) -> Result<Letter, Rejection> {
        letter.to = letter.to.trim().into();
        if letter.to.is_empty() {
            return Err(Rejection::new("invalid_input", "to must not be empty"));
        }
        Ok(letter)
    }
}

type PostLetter = SingleTaskDefinition<Post>;

fn start() -> Machine<PostLetter> {
    Machine::start(json!({ "to": " Ann ", "pages": 2, "colour": "blue" })).expect("a letter starts")
}

fn data_json<D: Definition>(machine: &Machine<D>) -> Value {
    serde_json::from_str(machine.data_json()).expect("data is JSON")
}

#[test]
fn the_manifest_has_the_running_state_and_three_ends() {
    let manifest = PostLetter::manifest();
    manifest.validate().expect("a valid manifest");
    assert_eq!((manifest.name.as_str(), manifest.version), ("post-letter", 3));
    assert_eq!(manifest.initial_state, "POSTING");
    let state = |name: &str, description: &str, terminal| StateDecl {
        name: name.into(),
        description: description.into(),
        terminal,
    };
    assert_eq!(
        manifest.states,
        [
            state("POSTING", "Posting the letter.", None),
            state(COMPLETED, "The letter is posted.", Some(TerminalStatus::Completed)),
            state(FAILED, "The letter could not be posted.", Some(TerminalStatus::Failed)),
            state(CANCELLED, "An admin cancelled the letter.", Some(TerminalStatus::Cancelled)),
        ]
    );
    assert!(manifest.actions.is_empty() && manifest.migrates_from.is_empty());
}

#[test]
fn init_runs_the_task_with_the_validated_parameters() {
    let letter = start();
    assert_eq!((letter.state(), letter.message()), ("POSTING", Some("Posting the letter")));
    let [Effect::Task(task)] = letter.effects() else { panic!("one task: {:?}", letter.effects()) };
    assert_eq!((task.key.as_str(), task.name.as_str()), ("post", "mail.post"));
    let input: Value = serde_json::from_str(&task.input).expect("task input is JSON");
    assert_eq!(input, json!({ "to": "Ann", "pages": 2 }), "validated, without the other members");
    assert_eq!((task.retry.as_ref(), task.attempt_timeout_ms, task.report_timeout_ms), (None, None, None));
    assert_eq!(
        letter.data_json(),
        r#"{"to":"Ann","pages":2,"receipt_id":null,"failure":null,"error":null,"outcome_unknown":false}"#,
        "the parameters' members first, then the ending's"
    );
}

#[test]
fn an_answer_with_the_id_completes() {
    let mut letter = start();
    letter.task_succeeded("post", json!({ "receipt_id": "R-9", "extra": 1 })).expect("taken");
    assert_eq!((letter.state(), letter.status()), (COMPLETED, Some(TerminalStatus::Completed)));
    assert_eq!(letter.message(), Some("Letter posted"));
    let data = letter.data();
    assert_eq!(data.params, Letter { to: "Ann".into(), pages: 2 });
    assert_eq!(data.id.as_deref(), Some("R-9"));
    assert_eq!((data.failure, data.error, data.outcome_unknown), (None, None, false));
    assert_eq!(data_json(&letter)["receipt_id"], "R-9", "kept under the id's own name");
    assert!(letter.effects().is_empty() && letter.open_effects().is_empty());
}

#[test]
fn an_answer_without_the_id_fails_with_the_outcome_unknown() {
    for output in [json!({}), json!({ "receipt_id": "" }), json!({ "receipt_id": 7 }), Value::Null] {
        let mut letter = start();
        letter.task_succeeded("post", output.clone()).expect("taken");
        assert_eq!((letter.state(), letter.status()), (FAILED, Some(TerminalStatus::Failed)), "{output}");
        assert_eq!(letter.message(), Some("The post office did not confirm"));
        let data = letter.data();
        assert_eq!(data.id, None);
        assert_eq!(data.failure.as_deref(), Some("mail.post answered without a receipt_id"));
        assert_eq!((data.error, data.outcome_unknown), (None, true));
    }
}

#[test]
fn a_failed_task_fails_with_the_reason_and_the_error() {
    let kinds = [
        (FailureKind::Http, "refused, HTTP 409, after 1 attempt"),
        (FailureKind::Timeout, "timed out, after 1 attempt"),
        (FailureKind::Unreachable, "unreachable, after 1 attempt"),
        (FailureKind::Exhausted, "retries used up, after 1 attempt"),
        (FailureKind::Unbound, "no participant bound, after 1 attempt"),
    ];
    for (kind, why) in kinds {
        let mut letter = start();
        letter.task_failed("post", kind).expect("taken");
        assert_eq!((letter.state(), letter.status()), (FAILED, Some(TerminalStatus::Failed)), "{kind:?}");
        assert_eq!(letter.message(), Some("The letter could not be posted"));
        let data = letter.data();
        assert_eq!(data.id, None);
        assert_eq!(data.failure, Some(format!("the letter could not be posted ({why})")));
        assert_eq!(data.error.map(|error| error.kind), Some(kind));
        let may_have_acted =
            matches!(kind, FailureKind::Timeout | FailureKind::Exhausted | FailureKind::Unreachable);
        assert_eq!(data.outcome_unknown, may_have_acted, "{kind:?}");
        assert!(letter.effects().is_empty() && letter.open_effects().is_empty());
    }
}

#[test]
fn the_error_is_kept_whole_in_the_data() {
    let mut letter = start();
    let error = TaskError {
        kind: FailureKind::Http,
        status: Some(422),
        body: Some("no such street".into()),
        attempts: 2,
    };
    letter.deliver(Received::TaskFailed { key: "post".into(), error: error.clone() }).expect("taken");
    assert_eq!(letter.data().error, Some(error));
    assert_eq!(
        data_json(&letter)["error"],
        json!({ "kind": "http", "status": 422, "body": "no such street", "attempts": 2 })
    );
    assert_eq!(
        data_json(&letter)["failure"],
        "the letter could not be posted (refused, HTTP 422, after 2 attempts)"
    );
}

#[test]
fn other_events_are_refused() {
    let mut letter = start();
    let external = letter.deliver(Received::External {
        name: "mail.update".into(),
        id: "e1".into(),
        payload: json!({}),
    });
    assert!(
        matches!(&external, Err(Refusal::Rejected(rejection)) if rejection.code == "unexpected_event"
            && rejection.reason == "POSTING does not expect event mail.update"),
        "{external:?}"
    );
    assert_eq!(letter.task_succeeded("return", json!({})), Err(Refusal::NoOpenEffect("return".into())));
    assert_eq!(letter.timer_fired("post"), Err(Refusal::NoOpenEffect("post".into())));
    assert_eq!(letter.state(), "POSTING", "nothing changed");
    assert_eq!(letter.open_effects().len(), 1, "the task still runs");
}

#[test]
fn an_action_is_refused() {
    let mut letter = start();
    assert_eq!(letter.act("resend", Value::Null), Err(Refusal::UnknownAction("resend".into())));
    let call = ActionCall {
        state: "POSTING".into(),
        data: letter.data(),
        action: "resend".into(),
        payload: Value::Null,
    };
    let context = Context { instance_id: "i".into(), definition_version: 3, now_ms: 0, seed: 0 };
    let refused = PostLetter::on_action(&context, call).map(|_| ());
    assert_eq!(refused, Err(Rejection::new("no_actions", "post-letter takes no actions, not resend")));
}

#[test]
fn an_admin_may_cancel_but_not_force_complete() {
    let mut letter = start();
    let refused = letter.admin_override(OverrideKind::ForceComplete, "posted by hand");
    assert_eq!(
        refused,
        Err(Refusal::Rejected(Rejection::new(
            "cannot_force_complete",
            "a letter is posted only with a receipt; cancel it instead"
        )))
    );
    letter.admin_override(OverrideKind::Cancel, "wrong address").expect("cancelled");
    assert_eq!((letter.state(), letter.status()), (CANCELLED, Some(TerminalStatus::Cancelled)));
    assert_eq!(letter.message(), Some("cancelled by an admin: wrong address"));
    assert!(letter.open_effects().is_empty(), "the cancel closed the task");
    assert_eq!(letter.task_succeeded("post", json!({ "receipt_id": "R-1" })), Err(Refusal::Finished));
}

#[test]
fn a_failed_instance_is_not_force_completed_either() {
    let mut letter = start();
    letter.task_failed("post", FailureKind::Http).expect("taken");
    let refused = letter.admin_override(OverrideKind::ForceComplete, "posted by hand");
    assert!(
        matches!(refused, Err(Refusal::Rejected(rejection)) if rejection.code == "cannot_force_complete")
    );
    assert_eq!(letter.state(), FAILED);
}

#[test]
fn input_is_validated_before_anything_runs() {
    for input in [json!({ "to": " ", "pages": 1 }), json!({ "to": "Ann" }), json!("Ann")] {
        let refused = Machine::<PostLetter>::start(input.clone());
        assert!(
            matches!(&refused, Err(Refusal::Rejected(rejection)) if rejection.code == "invalid_input"),
            "{input}: {refused:?}"
        );
    }
}

#[test]
fn data_reads_back_whatever_the_member_order() {
    let text = r#"{"outcome_unknown":true,"error":null,"receipt_id":null,"pages":1,"failure":"f","to":"Bo"}"#;
    let data: Data<Post> = serde_json::from_str(text).expect("data decodes");
    assert_eq!(data.params, Letter { to: "Bo".into(), pages: 1 });
    assert_eq!((data.id, data.failure.as_deref(), data.outcome_unknown), (None, Some("f"), true));
    assert!(
        serde_json::from_str::<Data<Post>>(r#"{"to":"Bo","pages":1}"#).is_err(),
        "the ending is required"
    );
}
