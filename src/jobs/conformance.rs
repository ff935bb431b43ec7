//! The behaviour every back end must show, through the public API only:
//! run by the unit tests (memory, SQLite) and by tests/jobs_postgres.rs
//! (PostgreSQL), which includes this file. The including module provides
//! the names (`JobTable`, `NewJob`, `Arc`, `Duration`, `json!`, ...).

use super::*;

const LONG: Duration = Duration::from_secs(3600);

pub async fn exercise(t: Arc<dyn JobTable>) {
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
    assert!(first.iter().all(|j| j.owner.as_deref() == Some("w1")));
    assert!(first.iter().all(|j| j.lease_until.unwrap() > j.updated_at));
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
    let ja = t.get(a).await.unwrap().unwrap();
    assert_eq!(
        (ja.state, ja.owner, ja.lease_until),
        (JobState::Done, None, None)
    );
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
    // The lease must outlast the next claim even on a loaded machine.
    let taken = t
        .claim(KIND_STOW, "dead", 10, Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![d]);
    assert!(t
        .claim(KIND_STOW, "alive", 10, LONG)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
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

/// Unique keys, payload updates and lease renewal.
pub async fn keys_and_progress(t: Arc<dyn JobTable>) {
    const KIND: &str = "commit";
    let first = t
        .insert_unique(KIND, "1.2.3.4", &json!({"step": 0}))
        .await
        .unwrap()
        .expect("a new key is accepted");
    assert_eq!(
        t.insert_unique(KIND, "1.2.3.4", &json!({"step": 99}))
            .await
            .unwrap(),
        None,
        "a key already used is refused"
    );
    // Refused even once the first job is finished: a Transaction UID is
    // used once for good.
    t.complete(first).await.unwrap();
    assert_eq!(
        t.insert_unique(KIND, "1.2.3.4", &json!({})).await.unwrap(),
        None
    );
    let other_kind = t
        .insert_unique("other", "1.2.3.4", &json!({}))
        .await
        .unwrap();
    assert!(other_kind.is_some(), "keys are unique per kind only");
    let found = t.find_by_key(KIND, "1.2.3.4").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.key.as_deref(), found.payload),
        (first, Some("1.2.3.4"), json!({"step": 0}))
    );
    assert!(t.find_by_key(KIND, "9.9").await.unwrap().is_none());

    // Jobs without a key never collide; a delayed job waits.
    let later = t
        .add(&NewJob::new(KIND, &json!({})).delay(Duration::from_secs(3600)))
        .await
        .unwrap()
        .unwrap();
    let now = t
        .add(&NewJob::new(KIND, &json!({"step": 1})).key("5.6"))
        .await
        .unwrap()
        .unwrap();
    let jl = t.get(later).await.unwrap().unwrap();
    assert!(jl.next_attempt_at >= jl.created_at + 3_599_000);
    let claimed = t.claim(KIND, "w1", 10, LONG).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![now]);

    // Progress: only the lease holder may write it when it says who it is.
    assert!(t
        .update_payload(now, Some("w1"), &json!({"step": 2}))
        .await
        .unwrap());
    assert!(!t
        .update_payload(now, Some("intruder"), &json!({"step": 666}))
        .await
        .unwrap());
    assert_eq!(
        t.get(now).await.unwrap().unwrap().payload,
        json!({"step": 2})
    );
    assert!(t
        .update_payload(now, None, &json!({"step": 3, "uids": ["1.2"]}))
        .await
        .unwrap());
    assert_eq!(
        t.find_by_key(KIND, "5.6").await.unwrap().unwrap().payload,
        json!({"step": 3, "uids": ["1.2"]})
    );
    assert!(!t.update_payload(9_999_999, None, &json!({})).await.unwrap());

    // Renewal pushes the lease out, for the holder only.
    let before = t.get(now).await.unwrap().unwrap().lease_until.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(t.renew(now, "w1", LONG).await.unwrap());
    assert!(t.get(now).await.unwrap().unwrap().lease_until.unwrap() > before);
    assert!(!t.renew(now, "intruder", LONG).await.unwrap());
    t.complete(now).await.unwrap();
    assert!(!t.renew(now, "w1", LONG).await.unwrap(), "done is done");
    assert!(!t.update_payload(now, Some("w1"), &json!({})).await.unwrap());
}

/// Two handles on one table with nodes "n1" and "n2": a job bound to a node
/// is only ever claimed there, even after its lease expired; a free job
/// goes to whoever asks first.
pub async fn node_affinity(n1: Arc<dyn JobTable>, n2: Arc<dyn JobTable>) {
    assert_eq!((n1.node(), n2.node()), ("n1", "n2"));
    let pinned = n1
        .add(&NewJob::new(KIND_STOW, &json!({"path": "/n1/x.dcm"})).node("n1"))
        .await
        .unwrap()
        .unwrap();
    let free = n1.insert(KIND_STOW, &json!({})).await.unwrap();
    assert_eq!(
        n2.get(pinned).await.unwrap().unwrap().node.as_deref(),
        Some("n1")
    );
    let got = n2.claim(KIND_STOW, "o2", 10, LONG).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![free]);
    let got = n1
        .claim(KIND_STOW, "o1", 10, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![pinned]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(n2
        .claim(KIND_STOW, "o2", 10, LONG)
        .await
        .unwrap()
        .is_empty());
    let again = n1.claim(KIND_STOW, "o1-restarted", 10, LONG).await.unwrap();
    assert_eq!(again.iter().map(|j| j.id).collect::<Vec<_>>(), vec![pinned]);
    // n1 restarts again: it need not wait out its own long lease.
    assert_eq!(n2.requeue_node(KIND_STOW).await.unwrap(), 0);
    assert_eq!(n1.requeue_node("other").await.unwrap(), 0);
    assert_eq!(n1.requeue_node(KIND_STOW).await.unwrap(), 1);
    let job = n2.get(pinned).await.unwrap().unwrap();
    assert_eq!((job.state, job.owner), (JobState::Pending, None));
    assert!(n2
        .claim(KIND_STOW, "o2", 10, LONG)
        .await
        .unwrap()
        .is_empty());
    let third = n1.claim(KIND_STOW, "o1-third", 10, LONG).await.unwrap();
    assert_eq!(third.iter().map(|j| j.id).collect::<Vec<_>>(), vec![pinned]);
}

/// Many jobs, two claimers per handle: every job is claimed exactly once.
pub async fn claims_never_overlap(handles: Vec<Arc<dyn JobTable>>, jobs: usize) {
    for i in 0..jobs {
        handles[0]
            .insert(KIND_STOW, &json!({ "n": i }))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for (h, t) in handles.iter().enumerate() {
        for w in 0..2 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("h{h}w{w}");
                let mut mine = Vec::new();
                loop {
                    let got = t.claim(KIND_STOW, &owner, 3, LONG).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for j in got {
                        assert_eq!(j.owner.as_deref(), Some(owner.as_str()));
                        mine.push(j.id);
                        t.complete(j.id).await.unwrap();
                    }
                }
            }));
        }
    }
    let mut per_task = Vec::new();
    for task in tasks {
        per_task.push(task.await.unwrap());
    }
    let mut all: Vec<JobId> = per_task.iter().flatten().copied().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (jobs, jobs),
        "claimed {n}, distinct {}",
        all.len()
    );
    assert_eq!(
        handles[0].count(KIND_STOW, JobState::Done).await.unwrap(),
        jobs as u64
    );
}

/// A claimer that stops renewing loses its job to another once the lease
/// ends, and can no longer write its progress.
pub async fn lease_takeover(a: Arc<dyn JobTable>, b: Arc<dyn JobTable>) {
    let id = a.insert("commit", &json!({"step": 0})).await.unwrap();
    let lease = Duration::from_secs(2);
    let step = Duration::from_millis(1200);
    let got = a.claim("commit", "a", 1, lease).await.unwrap();
    assert_eq!(got.len(), 1);
    // Renewed once: still ours past the first lease.
    tokio::time::sleep(step).await;
    assert!(a.renew(id, "a", lease).await.unwrap());
    tokio::time::sleep(step).await;
    assert!(b.claim("commit", "b", 1, LONG).await.unwrap().is_empty());
    // Then "a" dies: no more renewals.
    tokio::time::sleep(step).await;
    let over = b.claim("commit", "b", 1, LONG).await.unwrap();
    assert_eq!(over.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(over[0].owner.as_deref(), Some("b"));
    assert!(!a.renew(id, "a", lease).await.unwrap());
    assert!(!a
        .update_payload(id, Some("a"), &json!({"step": "stale"}))
        .await
        .unwrap());
    assert!(b
        .update_payload(id, Some("b"), &json!({"step": 1}))
        .await
        .unwrap());
    b.complete(id).await.unwrap();
    let job = a.get(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.payload),
        (JobState::Done, json!({"step": 1}))
    );
}

/// Two handles racing to insert the same keys: exactly one wins each.
pub async fn unique_keys_race(a: Arc<dyn JobTable>, b: Arc<dyn JobTable>) {
    let race = |t: Arc<dyn JobTable>| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..50 {
                let key = format!("1.2.840.99.{i}");
                if t.insert_unique("commit", &key, &json!({}))
                    .await
                    .unwrap()
                    .is_some()
                {
                    won.push(key);
                }
            }
            won
        })
    };
    let (wa, wb) = (race(a.clone()), race(b));
    let mut won = wa.await.unwrap();
    won.extend(wb.await.unwrap());
    won.sort();
    let n = won.len();
    won.dedup();
    assert_eq!((n, won.len()), (50, 50));
    assert_eq!(a.count("commit", JobState::Pending).await.unwrap(), 50);
}

/// Housekeeping: finished jobs purged by age, failed ones requeued by hand.
pub async fn housekeeping(t: Arc<dyn JobTable>) {
    let payload = json!({});
    let done = t.insert("hk", &payload).await.unwrap();
    let failed = t.insert("hk", &payload).await.unwrap();
    let pending = t.insert("hk", &payload).await.unwrap();
    t.complete(done).await.unwrap();
    t.retry_later(failed, Duration::from_secs(60), "busy")
        .await
        .unwrap();
    t.fail(failed, "refused").await.unwrap();
    assert!(
        !t.requeue_failed(pending).await.unwrap(),
        "only failed jobs are requeued"
    );
    assert!(t.requeue_failed(failed).await.unwrap());
    let again = t.get(failed).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempts), (JobState::Pending, 0));
    assert!(again.next_attempt_at <= unix_ms());
    t.fail(failed, "refused again").await.unwrap();
    assert_eq!(t.purge_finished(0).await.unwrap(), 0, "nothing is that old");
    let later = unix_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // (Other scenarios may share the table: their finished jobs go too.)
    assert!(t.purge_finished(later).await.unwrap() >= 2);
    assert!(t.get(done).await.unwrap().is_none());
    assert!(t.get(failed).await.unwrap().is_none());
    assert_eq!(
        t.get(pending).await.unwrap().unwrap().state,
        JobState::Pending
    );
}

fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}
