use super::*;

fn keys(open_metrics: bool) -> Keys {
    let key =
        ApiKey { name: "ci".into(), role: Role::Deployer, sha256: sha2::Sha256::digest(b"secret").into() };
    Keys::new(&[key], open_metrics)
}

#[test]
fn a_known_bearer_key_names_its_caller() {
    let keys = keys(true);
    let caller = keys.caller(Some(&HeaderValue::from_static("Bearer secret"))).ok();
    assert_eq!(caller, Some(Caller { name: "ci".into(), role: Role::Deployer }));
    let lower = keys.caller(Some(&HeaderValue::from_static("bearer secret"))).ok();
    assert_eq!(lower.map(|caller| caller.name), Some("ci".into()));
    for bad in ["Bearer other", "Basic secret", "secret", "Bearer"] {
        let problem = keys.caller(Some(&HeaderValue::from_static(bad))).err();
        assert_eq!(problem.map(|problem| problem.status), Some(StatusCode::UNAUTHORIZED), "{bad}");
    }
    assert!(keys.caller(None).is_err());
}

#[test]
fn without_keys_everyone_is_the_anonymous_admin() {
    let open = Keys::new(&[], true);
    assert_eq!(open.caller(None).ok(), Some(Caller::anonymous()));
    assert_eq!(open.caller(Some(&HeaderValue::from_static("Bearer x"))).ok(), Some(Caller::anonymous()));
}

#[test]
fn routes_need_the_roles_of_the_spec() {
    let keys = keys(true);
    let role = |method: Method, route| required_role(&method, route, &keys);
    assert_eq!(role(Method::GET, "/healthz"), None);
    assert_eq!(role(Method::GET, "/openapi.json"), None);
    assert_eq!(role(Method::GET, "/metrics"), None);
    assert_eq!(required_role(&Method::GET, "/metrics", &self::keys(false)), Some(Role::Client));
    assert_eq!(role(Method::GET, "/v1/definitions"), Some(Role::Client));
    assert_eq!(role(Method::POST, "/v1/definitions"), Some(Role::Deployer));
    assert_eq!(role(Method::DELETE, "/v1/definitions/{name}/versions/{version}"), Some(Role::Admin));
    assert_eq!(role(Method::POST, "/v1/instances/{id}/actions/{action}"), Some(Role::Client));
    assert_eq!(role(Method::GET, "/v1/instances/{id}/diagnostics"), Some(Role::Admin));
    // A route nobody listed is closed.
    assert_eq!(role(Method::GET, "/v1/something-new"), Some(Role::Admin));
}
