//! `/readyz` says whether commits can be made now, not only whether the process runs.

use crate::support::{Backend, TestServer, assert_problem};
use sqlx::Connection;

both_backends!(readiness_follows_whether_commits_can_be_made);

async fn readiness_follows_whether_commits_can_be_made(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(server.get("/readyz").await.expect(200).json()["status"], "ready");
    let blocked = WritesBlocked::start(&server).await;
    let problem = assert_problem(&server.get("/readyz").await, 503, "not-ready");
    assert!(problem["detail"].is_string(), "{problem}");
    // Reads still work: the process lives, it just cannot commit.
    server.get("/healthz").await.expect(200);
    server.get("/v1/definitions").await.expect(200);
    blocked.end().await;
    assert_eq!(server.get("/readyz").await.expect(200).json()["status"], "ready");
}

/// What keeps the server from committing: on SQLite another process holding the
/// database's write lock, on PostgreSQL the database made read-only for new sessions.
enum WritesBlocked {
    Sqlite(sqlx::SqliteConnection),
    Postgres { server: String, database: String },
}

impl WritesBlocked {
    async fn start(server: &TestServer) -> WritesBlocked {
        match server.postgres_database() {
            None => {
                let url = server.database_url.clone();
                let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("open the database");
                sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.expect("take the write lock");
                WritesBlocked::Sqlite(connection)
            }
            Some((postgres, database)) => {
                let blocked = WritesBlocked::Postgres { server: postgres.into(), database: database.into() };
                blocked.set_read_only(true).await;
                blocked
            }
        }
    }

    async fn end(self) {
        match self {
            WritesBlocked::Sqlite(mut connection) => {
                sqlx::query("ROLLBACK").execute(&mut connection).await.expect("release the write lock");
            }
            blocked @ WritesBlocked::Postgres { .. } => blocked.set_read_only(false).await,
        }
    }

    async fn set_read_only(&self, read_only: bool) {
        let WritesBlocked::Postgres { server, database } = self else { return };
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await.expect("connect");
        let setting = if read_only {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        sqlx::query(&format!("ALTER DATABASE {database} {setting}"))
            .execute(&mut admin)
            .await
            .expect("alter");
    }
}
