//! `/console/`: the web console's page and scripts, served by the host without a key
//! (what they show comes from API calls that need one), the page for every deep link,
//! each asset with its content type, and a policy that lets only the console's own
//! files run. What the console does in a browser is `scripts/console-e2e`'s to prove.

use crate::support::{Backend, TestServer, assert_problem};
use sha2::Digest;

both_backends!(the_console_is_served_without_a_key_and_answers_its_deep_links);

async fn the_console_is_served_without_a_key_and_answers_its_deep_links(backend: Backend) {
    let sha256 = hex::encode(sha2::Sha256::digest(b"console-admin-key-0123456789"));
    let config = format!("[[auth.keys]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{sha256}\"\n");
    let server = TestServer::start_with_config(backend, &config).await;
    // The API itself wants the key.
    assert_problem(&server.get("/v1/instances").await, 401, "unauthorized");

    let page = server.get("/console/").await.expect(200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("a content security policy");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8(page.body.clone()).expect("UTF-8");
    assert!(html.contains("/console/app.js"), "the page loads its script:\n{html}");

    // A deep link is the same page; the page's script routes by its path.
    for deep in
        ["/console/instances/0190c4a8-0000-7000-8000-000000000000", "/console/definitions/x/versions/2"]
    {
        let answered = server.get(deep).await.expect(200);
        assert_eq!(answered.body, page.body, "{deep}");
    }
    // `/console` without its slash is sent to the page (the client follows).
    assert_eq!(server.get("/console").await.expect(200).body, page.body);

    for (asset, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("graph.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let served = server.get(&format!("/console/{asset}")).await.expect(200);
        assert_eq!(served.header("content-type"), Some(content_type), "{asset}");
        assert_ne!(served.body, page.body, "{asset} is itself, not the page");
    }
}
