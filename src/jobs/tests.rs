//! The conformance scenarios against memory and SQLite; PostgreSQL runs
//! them in tests/jobs_postgres.rs.

use super::*;
use serde_json::json;

#[path = "conformance.rs"]
mod conformance;
use conformance::*;

async fn sqlite(dir: &Path, node: &str) -> Arc<dyn JobTable> {
    open(&format!("sqlite://{}/sub/jobs.db", dir.display()), node)
        .await
        .unwrap()
}

#[tokio::test]
async fn memory_back_end() {
    exercise(open("memory", "n1").await.unwrap()).await;
    housekeeping(open("memory", "n1").await.unwrap()).await;
    keys_and_progress(open("memory", "n1").await.unwrap()).await;
    let t = open("memory", "n1").await.unwrap();
    claims_never_overlap(vec![t.clone(), t], 40).await;
}

#[tokio::test]
async fn sqlite_back_end() {
    let dir = tempfile::tempdir().unwrap();
    exercise(sqlite(dir.path(), "n1").await).await;
    housekeeping(sqlite(dir.path(), "n1").await).await;
}

#[tokio::test]
async fn sqlite_keys_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    keys_and_progress(sqlite(dir.path(), "n1").await).await;
}

#[tokio::test]
async fn sqlite_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    node_affinity(
        sqlite(dir.path(), "n1").await,
        sqlite(dir.path(), "n2").await,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (sqlite(dir.path(), "a").await, sqlite(dir.path(), "b").await);
    claims_never_overlap(vec![a.clone(), b.clone()], 60).await;
    lease_takeover(a.clone(), b.clone()).await;
    unique_keys_race(a, b).await;
}

#[tokio::test]
async fn sqlite_insert_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = sqlite(dir.path(), "n1").await;
    let id = t
        .insert(KIND_STOW, &json!({"path": "/x.dcm"}))
        .await
        .unwrap();
    drop(t);
    let t = sqlite(dir.path(), "n1").await;
    let job = t.get(id).await.unwrap().expect("job survives reopen");
    assert_eq!(job.payload, json!({"path": "/x.dcm"}));
    assert_eq!(job.state, JobState::Pending);
    // ids keep growing after reopen (AUTOINCREMENT never reuses them)
    assert!(t.insert(KIND_STOW, &json!({})).await.unwrap() > id);
}

/// A jobs.db written before the schema had versions (node and key columns)
/// is migrated in place, its rows intact.
#[tokio::test]
async fn sqlite_file_of_the_first_schema_is_migrated() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    for stmt in [
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
         state TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
         last_error TEXT, lease_owner TEXT, lease_until BIGINT, created_at BIGINT NOT NULL,
         updated_at BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL)",
        "CREATE INDEX jobs_due ON jobs (kind, state, next_attempt_at)",
        "INSERT INTO jobs (kind, state, payload, attempts, created_at, updated_at, next_attempt_at)
         VALUES ('stow', 'pending', '{\"path\":\"/old.dcm\"}', 2, 1, 1, 1)",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let url = format!("sqlite://{}", path.display());
    let t = open(&url, "n1").await.unwrap();
    let old = t.get(1).await.unwrap().unwrap();
    assert_eq!(
        (old.payload, old.attempts, old.node, old.key),
        (json!({"path": "/old.dcm"}), 2, None, None)
    );
    assert_eq!(
        t.claim(KIND_STOW, "w", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(t
        .insert_unique("commit", "1.2", &json!({}))
        .await
        .unwrap()
        .is_some());
    drop(t);
    // Opening again finds the schema current and changes nothing.
    let t = open(&url, "n1").await.unwrap();
    assert!(t
        .insert_unique("commit", "1.2", &json!({}))
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.list(None, None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    assert!(matches!(
        open("mysql://x", "n").await,
        Err(JobError::Open { .. })
    ));
    assert!(matches!(
        open("sqlite://", "n").await,
        Err(JobError::Open { .. })
    ));
    // The password does not reach the message.
    let err = open("postgres://pons:s3cret@127.0.0.1:99999/pons", "n")
        .await
        .err()
        .expect("no server");
    let msg = err.to_string();
    assert!(matches!(err, JobError::Open { .. }), "{msg}");
    assert!(
        msg.contains("pons:***@127.0.0.1:99999") && !msg.contains("s3cret"),
        "{msg}"
    );
}

#[test]
fn redact_hides_passwords_only() {
    assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
    assert_eq!(redact("sqlite:///var/x.db"), "sqlite:///var/x.db");
    assert_eq!(
        redact("postgres://h/db?password=p&sslmode=disable"),
        "postgres://h/db?password=***&sslmode=disable"
    );
}
