use super::*;
use crate::model::Revision;

/// The status and problem type each variant must map to, with the variant's place in
/// [`VARIANTS`]. No wildcard: a new variant does not compile until it is listed here.
fn expected(err: &service::Error) -> (usize, StatusCode, &'static str) {
    use service::Error as E;
    match err {
        E::InvalidModule(_) => (0, StatusCode::UNPROCESSABLE_ENTITY, "invalid-module"),
        E::VersionConflict { .. } => (1, StatusCode::CONFLICT, "version-conflict"),
        E::DefinitionNotFound(_) => (2, StatusCode::NOT_FOUND, "not-found"),
        E::VersionNotFound { .. } => (3, StatusCode::NOT_FOUND, "not-found"),
        E::VersionRetired { .. } => (4, StatusCode::UNPROCESSABLE_ENTITY, "version-retired"),
        E::VersionPinned { .. } => (5, StatusCode::CONFLICT, "version-pinned"),
        E::VersionNotRetired { .. } => (6, StatusCode::CONFLICT, "version-not-retired"),
        E::VersionInUse { .. } => (7, StatusCode::CONFLICT, "version-in-use"),
        E::NoMigrationPath { .. } => (8, StatusCode::CONFLICT, "no-migration-path"),
        E::InstanceNotFound(_) => (9, StatusCode::NOT_FOUND, "not-found"),
        E::MigrationNotFound(_) => (10, StatusCode::NOT_FOUND, "not-found"),
        E::UnknownAction { .. } => (11, StatusCode::NOT_FOUND, "unknown-action"),
        E::NotAllowed { .. } => (12, StatusCode::CONFLICT, "action-not-allowed"),
        E::PreconditionFailed { .. } => (13, StatusCode::PRECONDITION_FAILED, "precondition-failed"),
        E::Rejected { .. } => (14, StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
        E::Guest(_) => (15, StatusCode::INTERNAL_SERVER_ERROR, "definition-failed"),
        E::BadOutcome(_) => (16, StatusCode::INTERNAL_SERVER_ERROR, "definition-failed"),
        E::Contention => (17, StatusCode::CONFLICT, "contention"),
        E::KeyTaken => (18, StatusCode::CONFLICT, "idempotency-key-in-use"),
        E::Store(_) => (19, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        E::Internal(_) => (20, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        E::BadEffects(_) => (21, StatusCode::INTERNAL_SERVER_ERROR, "definition-failed"),
        E::Finished(_) => (22, StatusCode::CONFLICT, "instance-finished"),
        E::EffectClosed => (23, StatusCode::CONFLICT, "effect-closed"),
        E::TaskNotFound(_) => (24, StatusCode::NOT_FOUND, "not-found"),
        E::ReportConflict(_) => (25, StatusCode::CONFLICT, "report-conflict"),
        E::EventDuplicate => (26, StatusCode::CONFLICT, "event-duplicate"),
        E::BadEvent(_) => (27, StatusCode::UNPROCESSABLE_ENTITY, "invalid-event"),
        E::BadCallback(_) => (28, StatusCode::UNPROCESSABLE_ENTITY, "invalid-callback"),
        E::Forbidden(_) => (29, StatusCode::FORBIDDEN, "forbidden"),
        E::VersionGone => (30, StatusCode::UNPROCESSABLE_ENTITY, "version-retired"),
        E::StoreUnavailable(_) => (31, StatusCode::SERVICE_UNAVAILABLE, "database-unavailable"),
        E::OutcomeUnknown(_) => (32, StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown"),
    }
}

/// How many arms [`expected`] has.
const VARIANTS: usize = 33;

/// One of each variant.
fn samples() -> Vec<service::Error> {
    use service::Error as E;
    let (name, version) = (String::from("d"), 1);
    vec![
        E::InvalidModule("x".into()),
        E::VersionConflict { name: name.clone(), version, sha256: "ab".into() },
        E::DefinitionNotFound(name.clone()),
        E::VersionNotFound { name: name.clone(), version },
        E::VersionRetired { name: name.clone(), version },
        E::VersionPinned { name: name.clone(), version },
        E::VersionNotRetired { name: name.clone(), version },
        E::VersionInUse { name: name.clone(), version, running: 3 },
        E::NoMigrationPath { from_version: 1, to_version: 2, reason: "r".into() },
        E::InstanceNotFound("i".into()),
        E::MigrationNotFound("m".into()),
        E::UnknownAction { definition: name, version, action: "a".into() },
        E::NotAllowed { action: "a".into(), current_state: "S".into(), allowed_actions: vec![] },
        E::PreconditionFailed { current: Revision(2) },
        E::Rejected { code: "c".into(), reason: "r".into() },
        E::Guest(crate::runtime::Error::Trap("unreachable".into())),
        E::BadOutcome(switchyard_guest::abi::OutcomeError::Undeclared("LIMBO".into())),
        E::Contention,
        E::KeyTaken,
        E::Store(crate::store::Error::Corrupt("row".into())),
        E::Internal("boom".into()),
        E::BadEffects(switchyard_guest::abi::EffectError::BadKey(String::new())),
        E::Finished("i".into()),
        E::EffectClosed,
        E::TaskNotFound("t".into()),
        E::ReportConflict("t".into()),
        E::EventDuplicate,
        E::BadEvent("b".into()),
        E::BadCallback("c".into()),
        E::Forbidden(crate::model::Forbidden {
            required: crate::model::Role::Admin,
            role: crate::model::Role::Client,
        }),
        E::VersionGone,
        E::StoreUnavailable(crate::store::Error::Db(sqlx::Error::PoolTimedOut)),
        E::OutcomeUnknown(crate::store::Error::Unconfirmed(std::sync::Arc::new(crate::store::Error::Db(
            sqlx::Error::PoolTimedOut,
        )))),
    ]
}

#[test]
fn every_service_error_has_one_status_and_type() {
    let mut seen = [false; VARIANTS];
    for err in samples() {
        let (index, status, kind) = expected(&err);
        seen[index] = true;
        let problem = Problem::from(err);
        assert_eq!((problem.status, problem.kind), (status, kind), "variant {index}");
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&index| !seen[index]).collect();
    assert!(missing.is_empty(), "no sample of the variants at {missing:?}");
}

#[test]
fn a_transient_database_failure_is_a_503_to_retry() {
    let err = service::Error::from(crate::store::Error::Db(sqlx::Error::PoolTimedOut));
    let response = Problem::from(err).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|value| value.to_str().ok()), Some("1"));
    let lasting = service::Error::from(crate::store::Error::Corrupt("row".into()));
    assert_eq!(Problem::from(lasting).status, StatusCode::INTERNAL_SERVER_ERROR);
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

#[test]
fn a_runtime_failure_around_a_guest_call_is_internal_and_keeps_wasmtimes_words_in_the_log() {
    for err in [
        crate::runtime::Error::Host("wasmtime: failed to allocate a pool slot".into()),
        crate::runtime::Error::InvalidModule("wasmtime: incompatible artifact".into()),
    ] {
        let problem = Problem::from(service::Error::Guest(err));
        assert_eq!((problem.status, problem.kind), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        let body = String::from_utf8(problem.body()).expect("utf-8");
        assert!(!body.contains("wasmtime"), "{body}");
        assert!(problem.cause.is_some_and(|cause| cause.contains("wasmtime")));
    }
}

#[test]
fn no_internal_error_body_carries_its_cause() {
    let database_text = "error returned from database: relation \"instances\" does not exist";
    let errors = samples().into_iter().chain([
        service::Error::Store(crate::store::Error::Corrupt(database_text.into())),
        service::Error::Internal(database_text.into()),
    ]);
    for err in errors {
        let problem = Problem::from(err);
        if problem.kind != "internal" {
            continue;
        }
        let body = String::from_utf8(problem.body()).expect("utf-8");
        let cause = problem.cause.as_deref().expect("an internal error keeps its cause for the log");
        assert!(!body.contains(cause) && !body.contains("database"), "{body}");
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["detail"], "the server failed; see its log");
    }
}
