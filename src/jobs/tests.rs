//! One behavioural test run against every back end through the trait.

use super::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(3600);

async fn exercise(t: Arc<dyn JobTable>) {
    // insert + get
    let a = t.insert(KIND_STOW, &json!({"n": 1})).await.unwrap();
    let b = t.insert(KIND_STOW, &json!({"n": 2})).await.unwrap();
    let c = t.insert(KIND_STOW, &json!({"n": 3})).await.unwrap();
    let other = t.insert("other", &json!({})).await.unwrap();
    assert!(a < b && b < c);
    let got = t.get(a).await.unwrap().unwrap();
    assert_eq!(got.state, JobState::Pending);
    assert_eq!(got.payload, json!({"n": 1}));
    assert_eq!(got.attempts, 0);
    assert!(t.get(9_999_999).await.unwrap().is_none());
    assert_eq!(t.count(KIND_STOW, JobState::Pending).await.unwrap(), 3);

    // claim respects limit and kind, oldest first; claimed jobs are not claimable twice
    let first = t.claim(KIND_STOW, "w1", 2, LONG).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b]);
    assert!(first.iter().all(|j| j.state == JobState::Running));
    let second = t.claim(KIND_STOW, "w2", 10, LONG).await.unwrap();
    assert_eq!(second.iter().map(|j| j.id).collect::<Vec<_>>(), vec![c]);
    assert!(t.claim(KIND_STOW, "w2", 10, LONG).await.unwrap().is_empty());
    assert_eq!(t.count(KIND_STOW, JobState::Running).await.unwrap(), 3);

    // complete / fail
    t.complete(a).await.unwrap();
    t.fail(b, "upstream said no").await.unwrap();
    let jb = t.get(b).await.unwrap().unwrap();
    assert_eq!(jb.state, JobState::Failed);
    assert_eq!(jb.last_error.as_deref(), Some("upstream said no"));
    assert_eq!(t.get(a).await.unwrap().unwrap().state, JobState::Done);
    assert!(matches!(
        t.complete(9_999_999).await,
        Err(JobError::NotFound(_))
    ));

    // retry_later: not claimable before the delay, then claimable again
    t.retry_later(c, LONG, "503").await.unwrap();
    let jc = t.get(c).await.unwrap().unwrap();
    assert_eq!((jc.state, jc.attempts), (JobState::Pending, 1));
    assert_eq!(jc.last_error.as_deref(), Some("503"));
    assert!(t.claim(KIND_STOW, "w1", 10, LONG).await.unwrap().is_empty());
    t.retry_later(c, Duration::from_millis(30), "again")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let again = t.claim(KIND_STOW, "w1", 10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (c, 2));

    // an expired lease is taken over by another worker
    let d = t.insert(KIND_STOW, &json!({"n": 4})).await.unwrap();
    let taken = t
        .claim(KIND_STOW, "dead", 10, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![d]);
    assert!(t
        .claim(KIND_STOW, "alive", 10, LONG)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let over = t.claim(KIND_STOW, "alive", 10, LONG).await.unwrap();
    assert_eq!(over.iter().map(|j| j.id).collect::<Vec<_>>(), vec![d]);

    // list: newest first, filtered
    let all = t.list(None, None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![d, other, c, b, a]
    );
    let stow = t.list(Some(KIND_STOW), None, 2).await.unwrap();
    assert_eq!(stow.iter().map(|j| j.id).collect::<Vec<_>>(), vec![d, c]);
    let failed = t
        .list(Some(KIND_STOW), Some(JobState::Failed), 10)
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(t.count(KIND_STOW, JobState::Done).await.unwrap(), 1);
    assert_eq!(t.count("other", JobState::Pending).await.unwrap(), 1);
    assert_eq!(t.claim(KIND_STOW, "w", 0, LONG).await.unwrap().len(), 0);
}

#[tokio::test]
async fn memory_back_end() {
    exercise(open("memory").await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_back_end() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sub/jobs.db", dir.path().display());
    exercise(open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_insert_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let t = open(&url).await.unwrap();
    let id = t
        .insert(KIND_STOW, &json!({"path": "/x.dcm"}))
        .await
        .unwrap();
    drop(t);
    let t = open(&url).await.unwrap();
    let job = t.get(id).await.unwrap().expect("job survives reopen");
    assert_eq!(job.payload, json!({"path": "/x.dcm"}));
    assert_eq!(job.state, JobState::Pending);
    // ids keep growing after reopen (AUTOINCREMENT never reuses them)
    assert!(t.insert(KIND_STOW, &json!({})).await.unwrap() > id);
}

#[tokio::test]
async fn concurrent_claims_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let t = open(&url).await.unwrap();
    for i in 0..40 {
        t.insert(KIND_STOW, &json!({ "n": i })).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = t.claim(KIND_STOW, &format!("w{w}"), 3, LONG).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (40, 40));
}

#[tokio::test]
async fn bad_urls_are_refused() {
    assert!(matches!(
        open("postgres://x").await,
        Err(JobError::Open { .. })
    ));
    assert!(matches!(
        open("sqlite://").await,
        Err(JobError::Open { .. })
    ));
}
