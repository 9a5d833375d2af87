//! The server outlives its database connections. PostgreSQL only: a SQLite file has
//! no sessions to end from outside.

use crate::support::{Backend, TestServer, module};
use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::Connection;

/// Instances driven at once, so that the pools hold several connections each.
const INSTANCES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_after_postgres_ended_every_session() {
    let server = &TestServer::start(Backend::Postgres).await;
    server.deploy(module("document-processing")).await.expect(201);
    let created = join_all((0..INSTANCES).map(|n| {
        server.create("document-processing", json!({ "document_url": format!("s3://before-{n}") }))
    }))
    .await;
    let ids: Vec<String> =
        created.iter().map(|instance| instance["id"].as_str().expect("id").to_owned()).collect();
    join_all(
        ids.iter().map(|id| async move { server.get(&format!("/v1/instances/{id}")).await.expect(200) }),
    )
    .await;

    let ended = server.end_database_sessions().await;
    assert!(ended >= 2, "the server had {ended} sessions open");

    // At once, on connections that were in use a moment ago: every kind of database
    // use, several at once: hot reads, pooled reads, commits.
    join_all(ids.iter().map(|id| async move {
        server.get(&format!("/v1/instances/{id}")).await.expect(200);
        server.get(&format!("/v1/instances/{id}/history")).await.expect(200);
        server.act(id, "validate", Value::Null).await.expect(200);
        server.create("document-processing", json!({ "document_url": "s3://after" })).await;
    }))
    .await;
    server.get("/v1/definitions/document-processing").await.expect(200);
}

/// A lone commit whose database session dies mid-statement (here: ended by an admin
/// while it waits on a row lock) is written again on another connection, and its
/// client hears 200, not 500; the action applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_session_dies_mid_statement_is_written_again() {
    let server = TestServer::start(Backend::Postgres).await;
    server.deploy(module("document-processing")).await.expect(201);
    let id = server.create("document-processing", json!({ "document_url": "s3://locked" })).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (postgres, database) = server.postgres_database().expect("a database of its own");
    let url = format!("{postgres}/{database}");
    let mut blocker = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut watcher = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut lock = sqlx::Connection::begin(&mut blocker).await.expect("begin");
    sqlx::query("SELECT id FROM instances WHERE id = $1 FOR UPDATE")
        .bind(&id)
        .execute(&mut *lock)
        .await
        .expect("lock");

    let interfere = async {
        // The action's commit waits on the row; its session is ended under it.
        let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                         AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND pid <> $1";
        let locker: i32 =
            sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *lock).await.expect("pid");
        let mut first = None;
        for _ in 0..1_500 {
            first = sqlx::query_scalar::<_, i32>(waiting)
                .bind(locker)
                .fetch_optional(&mut watcher)
                .await
                .expect("look");
            if first.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let first = first.expect("the commit waits on the lock within 15 s");
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(first)
            .execute(&mut watcher)
            .await
            .expect("terminate");
        // Written again, it waits on the lock again, from another session.
        let again = format!("{waiting} AND pid <> {first}");
        for _ in 0..1_500 {
            let retried: Option<i32> =
                sqlx::query_scalar(&again).bind(locker).fetch_optional(&mut watcher).await.expect("look");
            if retried.is_some() {
                return lock.commit().await.expect("release the lock");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the commit was not written again within 15 s");
    };
    let (answer, ()) = tokio::join!(server.act(&id, "validate", Value::Null), interfere);
    assert_eq!(answer.expect(200).json()["state"], "VALIDATING");
    let history = server.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2), "applied once: {history}");
    assert!(server.log().contains("writing them again"), "{}", server.log());
}
