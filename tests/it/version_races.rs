//! The version lifecycle decided in the database, not by check-then-act: a start whose
//! version is retired and deleted while its `init` runs is refused, and pinning and
//! retiring one version at once never leaves it both pinned and retired.

use crate::guest_limits::{ENDLESS_FUEL, hostile_server};
use crate::support::{Backend, TestServer, assert_problem, module};
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

both_backends!(a_start_loses_to_the_deletion_of_its_version, pinning_and_retiring_one_version_serialise);

/// Turns of the hostile guest's `busy` in `init`: over a second, far longer than a
/// retirement and a deletion take.
const SLOW_INIT_TURNS: u64 = 1_000_000_000;

async fn a_start_loses_to_the_deletion_of_its_version(backend: Backend) {
    let server = hostile_server(backend, &format!("{ENDLESS_FUEL}\ndeadline_ms = 60000")).await;
    let start = server.create_answer("hostile", json!({ "turns": SLOW_INIT_TURNS }));
    let race = async {
        // The start has chosen its version and runs `init`.
        server.wait_for_metric("switchyard_guest_calls_total", |calls| calls >= 1.0).await;
        server
            .request(Method::POST, "/v1/definitions/hostile/versions/1/retire", &[], None)
            .await
            .expect(200);
        server.request(Method::DELETE, "/v1/definitions/hostile/versions/1", &[], None).await.expect(204);
        assert_eq!(server.metric("switchyard_commits_total").await, 0.0, "the start has not committed yet");
    };
    let (started, ()) = tokio::join!(start, race);
    let problem = assert_problem(&started, 422, "version-retired");
    assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("meanwhile")), "{problem}");
    let listed = server.get("/v1/instances?definition=hostile").await.expect(200).json();
    assert_eq!(listed["items"], json!([]), "no instance stands on the deleted version");
}

async fn pinning_and_retiring_one_version_serialise(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.deploy(module("document-processing")).await.expect(201);
    server.deploy(module("document-processing-v2")).await.expect(201);
    let hold = DefinitionHeld::take(&server).await;
    let pin = server.request(
        Method::PUT,
        "/v1/definitions/document-processing/default-version",
        &[("content-type", "application/json")],
        Some(br#"{"version": 1}"#.to_vec()),
    );
    let retire =
        server.request(Method::POST, "/v1/definitions/document-processing/versions/1/retire", &[], None);
    let release = async {
        hold.release_once_both_wait(&server).await;
    };
    let (pinned, retired, ()) = tokio::join!(pin, retire, release);
    let definition = server.get("/v1/definitions/document-processing").await.expect(200).json();
    let v1_retired = definition["versions"][0]["retired_at"].is_string();
    match (pinned.status.as_u16(), retired.status.as_u16()) {
        (200, _) => {
            assert_problem(&retired, 409, "version-pinned");
            assert_eq!((definition["pinned_version"].as_u64(), v1_retired), (Some(1), false));
        }
        (_, 200) => {
            assert_problem(&pinned, 422, "version-retired");
            assert_eq!((definition["pinned_version"].as_u64(), v1_retired), (None, true));
        }
        other => panic!("one of pin and retire succeeds: {other:?}; {definition}"),
    }
}

/// On PostgreSQL, a lock on the definition's row that both requests must wait for,
/// seen waited on in `pg_stat_activity`: both have read what they decide on before
/// either writes, the interleaving check-then-act gets wrong. On SQLite, whose writes
/// take one lock in turn, the two simply race.
struct DefinitionHeld(Option<(sqlx::PgConnection, String, String)>);

impl DefinitionHeld {
    async fn take(server: &TestServer) -> DefinitionHeld {
        let Some((postgres, database)) = server.postgres_database() else { return DefinitionHeld(None) };
        let mut tx = sqlx::PgConnection::connect(&format!("{postgres}/{database}")).await.expect("connect");
        sqlx::query("BEGIN").execute(&mut tx).await.expect("begin");
        sqlx::query("SELECT 1 FROM definitions WHERE name = 'document-processing' FOR UPDATE")
            .execute(&mut tx)
            .await
            .expect("lock the definition");
        DefinitionHeld(Some((tx, postgres.into(), database.into())))
    }

    async fn release_once_both_wait(self, server: &TestServer) {
        let Some((mut tx, postgres, database)) = self.0 else { return };
        let mut admin = sqlx::PgConnection::connect(&format!("{postgres}/postgres")).await.expect("connect");
        for _ in 0..3000 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(&database)
            .fetch_one(&mut admin)
            .await
            .expect("pg_stat_activity");
            if waiting >= 2 {
                sqlx::query("COMMIT").execute(&mut tx).await.expect("release");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pin and retire never both waited on the definition's row; log:\n{}", server.log());
    }
}
