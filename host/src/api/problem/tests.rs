use super::*;
use crate::model::Revision;

fn status_of(err: service::Error) -> (StatusCode, &'static str) {
    let problem = Problem::from(err);
    (problem.status, problem.kind)
}

#[test]
fn every_service_error_has_one_status() {
    use service::Error as E;
    let cases = [
        (E::InvalidModule("x".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (E::DefinitionNotFound("x".into()), StatusCode::NOT_FOUND),
        (E::InstanceNotFound("x".into()), StatusCode::NOT_FOUND),
        (E::UnknownAction { definition: "d".into(), version: 1, action: "a".into() }, StatusCode::NOT_FOUND),
        (
            E::NotAllowed { action: "a".into(), current_state: "S".into(), allowed_actions: vec![] },
            StatusCode::CONFLICT,
        ),
        (E::PreconditionFailed { current: Revision(2) }, StatusCode::PRECONDITION_FAILED),
        (E::Rejected { code: "c".into(), reason: "r".into() }, StatusCode::UNPROCESSABLE_ENTITY),
        (E::Contention, StatusCode::CONFLICT),
        (E::Internal("boom".into()), StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (err, expected) in cases {
        assert_eq!(status_of(err).0, expected);
    }
}

#[test]
fn internal_errors_hide_their_cause() {
    let problem = Problem::from(service::Error::Internal("secret path /etc".into()));
    let body = String::from_utf8(problem.body()).expect("utf-8");
    assert!(!body.contains("secret"), "{body}");
    assert!(problem.cause.is_some_and(|cause| cause.contains("secret")));
}

#[test]
fn not_allowed_carries_state_and_allowed_actions() {
    let err = service::Error::NotAllowed {
        action: "publish".into(),
        current_state: "UPLOADED".into(),
        allowed_actions: vec!["validate".into()],
    };
    let body: Value = serde_json::from_slice(&Problem::from(err).body()).expect("json");
    assert_eq!(body["current_state"], "UPLOADED");
    assert_eq!(body["allowed_actions"], json!(["validate"]));
    assert_eq!(body["status"], 409);
    assert!(body["type"].as_str().is_some_and(|kind| kind.ends_with("action-not-allowed")));
}

#[test]
fn only_final_client_errors_are_kept_under_idempotency_keys() {
    assert!(Problem::from(service::Error::Rejected { code: "c".into(), reason: "r".into() }).is_final());
    assert!(!Problem::from(service::Error::Contention).is_final());
    assert!(!Problem::internal("x").is_final());
}
