use super::*;

fn error(kind: FailureKind, status: Option<u16>, attempts: u32) -> TaskError {
    TaskError { kind, status, body: Some("ignored".into()), attempts }
}

#[test]
fn a_task_error_displays_its_kind_status_and_attempts() {
    for (error, text) in [
        (error(FailureKind::Http, Some(409), 1), "refused, HTTP 409, after 1 attempt"),
        (error(FailureKind::Timeout, None, 3), "timed out, after 3 attempts"),
        (error(FailureKind::Unreachable, None, 5), "unreachable, after 5 attempts"),
        (error(FailureKind::Exhausted, Some(503), 5), "retries used up, HTTP 503, after 5 attempts"),
        (error(FailureKind::Unbound, None, 0), "no participant bound"),
        (error(FailureKind::Unbound, None, 2), "no participant bound, after 2 attempts"),
    ] {
        assert_eq!(error.to_string(), text, "{error:?}");
    }
}

#[test]
fn a_failure_kind_displays_for_people() {
    assert_eq!(FailureKind::Http.to_string(), "refused");
    assert_eq!(FailureKind::Timeout.to_string(), "timed out");
}
