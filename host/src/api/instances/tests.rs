use super::*;

fn headers(name: &'static str, value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_static(value));
    headers
}

#[test]
fn etags_match_strong_weak_lists_and_star() {
    assert!(etag_matches("\"3\"", Revision(3)));
    assert!(etag_matches("W/\"3\"", Revision(3)));
    assert!(etag_matches("\"1\", \"3\"", Revision(3)));
    assert!(etag_matches("*", Revision(7)));
    assert!(!etag_matches("\"4\"", Revision(3)));
}

#[test]
fn prefer_wait_is_found_among_other_preferences() {
    assert_eq!(prefer_wait(&headers("prefer", "wait=5")), Some(Duration::from_secs(5)));
    assert_eq!(prefer_wait(&headers("prefer", "return=minimal, wait=12")), Some(Duration::from_secs(12)));
    assert_eq!(prefer_wait(&headers("prefer", "wait=soon")), None);
    assert_eq!(prefer_wait(&HeaderMap::new()), None);
}

#[test]
fn if_match_accepts_star_and_our_etags_only() {
    assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
    assert_eq!(if_match(&headers("if-match", "*")).ok(), Some(None));
    assert_eq!(if_match(&headers("if-match", "\"9\"")).ok(), Some(Some(Revision(9))));
    let refused = if_match(&headers("if-match", "abc")).err().map(|problem| problem.status);
    assert_eq!(refused, Some(StatusCode::PRECONDITION_FAILED));
}
