//! Spool and forwarder tests, with a scripted upstream instead of HTTP.

use super::forwarder::{run, StowTarget};
use super::*;
use crate::jobs::{self, Job};
use crate::web::client::{InstanceOutcome, StowItem, UpstreamError};
use async_trait::async_trait;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A small valid CT image, Explicit VR Little Endian.
pub(crate) fn write_ct(path: &Path, instance_uid: &str) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let mut obj = InMemDicomObject::new_empty();
    let s = |v: &str| PrimitiveValue::from(v);
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        s(uids::CT_IMAGE_STORAGE),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        s(instance_uid),
    ));
    obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, s("TEST")));
    obj.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        s("1.2.826.0.1.3680043.9.1"),
    ));
    obj.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        s("1.2.826.0.1.3680043.9.1.1"),
    ));
    obj.put(DataElement::new(tags::MODALITY, VR::CS, s("CT")));
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, 16),
        (tags::COLUMNS, 16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        s("MONOCHROME2"),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16((0..256u16).collect()),
    ));
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

fn meta(uid: &str) -> InstanceMeta {
    InstanceMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        sop_instance_uid: uid.into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        calling_ae: "CT01".into(),
    }
}

async fn spool_one(spool: &Spool, uid: &str) -> (JobId, PathBuf) {
    let mut f = spool.create_incoming().await.unwrap();
    f.write(format!("DICM {uid}").as_bytes()).await.unwrap();
    let id = spool.commit(f, &meta(uid)).await.unwrap();
    let job = spool.jobs.get(id).await.unwrap().unwrap();
    let p: StowPayload = serde_json::from_value(job.payload).unwrap();
    assert_eq!(p.meta.sop_instance_uid, uid);
    (id, p.path)
}

#[tokio::test]
async fn commit_recover_and_discard() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let sdir = dir.path().join("spool");
    let spool = Spool::open(&sdir, jobs::open(&url, "n1").await.unwrap())
        .await
        .unwrap();
    let (id, path) = spool_one(&spool, "1.2.3").await;
    assert!(path.starts_with(sdir.join("ready")) && path.exists());
    // The file is on this machine: only this node may send it.
    let job = spool.jobs.get(id).await.unwrap().unwrap();
    assert_eq!(job.node.as_deref(), Some("n1"));
    // A file that will not be acknowledged goes when dropped.
    let mut gone = spool.create_incoming().await.unwrap();
    gone.write(b"partial").await.unwrap();
    gone.flush().await.unwrap();
    let gone_path = gone.path().to_owned();
    assert!(gone_path.exists());
    drop(gone);
    assert!(!gone_path.exists());
    // Left-overs of a crash: a partial file, a ready file without a job,
    // and a ready file nobody can read.
    let part = sdir.join("incoming/crashed.part");
    std::fs::write(&part, b"partial").unwrap();
    write_ct(&sdir.join("ready/orphan.dcm"), "1.2.3.99");
    std::fs::write(sdir.join("ready/garbage.dcm"), b"not dicom").unwrap();
    drop(spool);

    let table = jobs::open(&url, "n1").await.unwrap();
    let spool = Spool::open(&sdir, table.clone()).await.unwrap();
    assert!(!part.exists());
    assert!(sdir.join("failed/garbage.dcm").exists());
    let pending = table
        .list(Some(KIND_STOW), Some(JobState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(
        pending.len(),
        2,
        "the committed job survived, the orphan was added"
    );
    assert_eq!(pending[1].id, id);
    let orphan: StowPayload = serde_json::from_value(pending[0].payload.clone()).unwrap();
    assert_eq!(orphan.meta.sop_instance_uid, "1.2.3.99");
    assert_eq!(orphan.meta.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
    assert_eq!(orphan.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert_eq!(pending[0].node.as_deref(), Some("n1"));
    // The process dies while it holds both jobs with a long lease.
    let held = table
        .claim(KIND_STOW, "dead", 10, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    // Opening again adds nothing, and takes the jobs back at once.
    drop(spool);
    Spool::open(&sdir, table.clone()).await.unwrap();
    assert_eq!(table.count(KIND_STOW, JobState::Pending).await.unwrap(), 2);
    assert_eq!(table.count(KIND_STOW, JobState::Running).await.unwrap(), 0);
}

/// Answers by SOP Instance UID prefix: "ok", "warn", "bad" (A900), "na";
/// "reject" makes the whole request a 400; "busy" a 503 with Retry-After;
/// "denied" a 401.
#[derive(Default)]
struct Scripted {
    calls: Mutex<Vec<usize>>,
}

#[async_trait]
impl StowTarget for Scripted {
    async fn stow(&self, items: &[StowItem]) -> Result<Vec<InstanceOutcome>, UpstreamError> {
        self.calls.lock().unwrap().push(items.len());
        let status = |status, retry_after| UpstreamError::Status {
            url: "http://upstream/studies".into(),
            status,
            message: "no".into(),
            retry_after,
        };
        let has = |p: &str| items.iter().any(|i| i.sop_instance_uid.starts_with(p));
        if has("reject") {
            return Err(status(400, None));
        }
        if has("busy") {
            return Err(status(503, Some(Duration::from_secs(30))));
        }
        if has("denied") {
            return Err(status(401, None));
        }
        Ok(items
            .iter()
            .map(|i| match i.sop_instance_uid.as_str() {
                u if u.starts_with("ok") => InstanceOutcome::Stored,
                u if u.starts_with("warn") => InstanceOutcome::StoredWithWarning(0xB000),
                u if u.starts_with("bad") => InstanceOutcome::Failed(0xA900),
                _ => InstanceOutcome::NotAcknowledged,
            })
            .collect())
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    spool: Spool,
    target: Arc<Scripted>,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), jobs::open("memory", "n1").await.unwrap())
            .await
            .unwrap();
        Rig {
            _dir: dir,
            spool,
            target: Arc::new(Scripted::default()),
        }
    }

    /// Run the forwarder until `done` holds for the table (or 5 s pass).
    async fn forward_until(&self, batch: usize, done: impl Fn(&[Job]) -> bool) -> Vec<Job> {
        let cfg = ForwarderConfig {
            batch,
            concurrency: 2,
            retry_max: Duration::from_secs(20),
            lease: Duration::from_secs(60),
            failed_dir: self.spool.failed_dir(),
            kind: "stow".into(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            self.spool.jobs.clone(),
            self.target.clone(),
            cfg,
            self.spool.notifier(),
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let jobs = loop {
            let jobs = self.spool.jobs.list(None, None, 100).await.unwrap();
            if done(&jobs) || tokio::time::Instant::now() > deadline {
                break jobs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("forwarder stops on shutdown")
            .unwrap();
        jobs
    }
}

fn settled(jobs: &[Job]) -> bool {
    jobs.iter()
        .all(|j| j.state != JobState::Running && (j.state != JobState::Pending || j.attempts > 0))
}

fn job(jobs: &[Job], id: JobId) -> &Job {
    jobs.iter().find(|j| j.id == id).unwrap()
}

#[tokio::test]
async fn outcomes_per_instance() {
    let rig = Rig::new().await;
    let (ok, ok_path) = spool_one(&rig.spool, "ok1").await;
    let (warn, _) = spool_one(&rig.spool, "warn1").await;
    let (bad, bad_path) = spool_one(&rig.spool, "bad1").await;
    let (na, na_path) = spool_one(&rig.spool, "na1").await;
    let (missing, missing_path) = spool_one(&rig.spool, "ok2").await;
    std::fs::remove_file(&missing_path).unwrap();
    let jobs = rig.forward_until(10, settled).await;

    assert_eq!(job(&jobs, ok).state, JobState::Done);
    assert!(!ok_path.exists());
    assert_eq!(job(&jobs, warn).state, JobState::Done);
    let b = job(&jobs, bad);
    assert_eq!(b.state, JobState::Failed);
    assert_eq!(
        b.last_error.as_deref(),
        Some("upstream Failure Reason 0xA900 (data set does not match SOP class)")
    );
    assert!(!bad_path.exists());
    assert!(rig
        .spool
        .failed_dir()
        .join(bad_path.file_name().unwrap())
        .exists());
    let n = job(&jobs, na);
    assert_eq!((n.state, n.attempts), (JobState::Pending, 1));
    assert!(
        n.next_attempt_at >= n.updated_at + 900,
        "backs off about 1 s"
    );
    assert!(na_path.exists());
    let m = job(&jobs, missing);
    assert_eq!(m.state, JobState::Failed);
    assert!(
        m.last_error.as_deref().unwrap().contains("missing"),
        "{m:?}"
    );
    assert_eq!(
        *rig.target.calls.lock().unwrap(),
        vec![4],
        "one request for the batch"
    );
}

#[tokio::test]
async fn a_refused_batch_is_split() {
    let rig = Rig::new().await;
    let (a, _) = spool_one(&rig.spool, "ok1").await;
    let (r, r_path) = spool_one(&rig.spool, "reject1").await;
    let (b, _) = spool_one(&rig.spool, "ok2").await;
    let jobs = rig.forward_until(10, settled).await;
    assert_eq!(job(&jobs, a).state, JobState::Done);
    assert_eq!(job(&jobs, b).state, JobState::Done);
    let rj = job(&jobs, r);
    assert_eq!(rj.state, JobState::Failed);
    assert!(
        rj.last_error.as_deref().unwrap().contains("HTTP 400"),
        "{rj:?}"
    );
    assert!(!r_path.exists());
    assert!(rig
        .spool
        .failed_dir()
        .join(r_path.file_name().unwrap())
        .exists());
    assert_eq!(*rig.target.calls.lock().unwrap(), vec![3, 1, 1, 1]);
}

#[tokio::test]
async fn transient_errors_back_off_honouring_retry_after() {
    let rig = Rig::new().await;
    let (a, path) = spool_one(&rig.spool, "busy1").await;
    let (b, _) = spool_one(&rig.spool, "ok1").await;
    let jobs = rig.forward_until(10, settled).await;
    for id in [a, b] {
        let j = job(&jobs, id);
        assert_eq!((j.state, j.attempts), (JobState::Pending, 1));
        // Retry-After 30 s, capped by retry_max 20 s.
        let wait = j.next_attempt_at - j.updated_at;
        assert!((19_900..=20_100).contains(&wait), "{wait}");
        assert!(j.last_error.as_deref().unwrap().contains("503"));
    }
    assert!(path.exists());
}

#[tokio::test]
async fn commit_wakes_an_idle_forwarder() {
    let rig = Rig::new().await;
    let cfg = ForwarderConfig {
        batch: 5,
        concurrency: 1,
        retry_max: Duration::from_secs(1),
        lease: Duration::from_secs(60),
        failed_dir: rig.spool.failed_dir(),
        kind: "stow".into(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        rig.spool.jobs.clone(),
        rig.target.clone(),
        cfg,
        rig.spool.notifier(),
        shutdown.clone(),
    ));
    // The worker has found nothing and sleeps its 200 ms poll.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (id, _) = spool_one(&rig.spool, "ok1").await;
    let t0 = tokio::time::Instant::now();
    while rig.spool.jobs.get(id).await.unwrap().unwrap().state != JobState::Done {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Without the wake-up it would take the rest of the poll (~180 ms).
    assert!(
        t0.elapsed() < Duration::from_millis(120),
        "{:?}",
        t0.elapsed()
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn unauthorized_is_retried_not_failed() {
    let rig = Rig::new().await;
    let (a, path) = spool_one(&rig.spool, "denied1").await;
    let (b, _) = spool_one(&rig.spool, "ok1").await;
    let jobs = rig.forward_until(10, settled).await;
    for id in [a, b] {
        let j = job(&jobs, id);
        assert_eq!((j.state, j.attempts), (JobState::Pending, 1), "{j:?}");
    }
    assert!(path.exists());
    assert_eq!(
        *rig.target.calls.lock().unwrap(),
        vec![2],
        "no split on 401"
    );
}

#[tokio::test]
async fn in_flight_counts_spooled_instances_until_settled() {
    let dir = tempfile::tempdir().unwrap();
    let table = jobs::open("memory", "n1").await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), table.clone())
        .await
        .unwrap();
    let (a, _) = spool_one(&spool, "1.2.1").await;
    let (b, _) = spool_one(&spool, "1.2.2").await;
    spool_one(&spool, "1.2.3").await;
    let asked: HashSet<&str> = ["1.2.1", "1.2.2", "1.2.9"].into_iter().collect();
    assert_eq!(
        in_flight(table.as_ref(), &["stow".to_owned()], &asked)
            .await
            .unwrap(),
        2
    );
    // Being sent still counts; sent or refused does not.
    let claimed = table
        .claim(KIND_STOW, "me", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed[0].id, a);
    assert_eq!(
        in_flight(table.as_ref(), &["stow".to_owned()], &asked)
            .await
            .unwrap(),
        2
    );
    table.complete(a).await.unwrap();
    table.fail(b, "refused").await.unwrap();
    assert_eq!(
        in_flight(table.as_ref(), &["stow".to_owned()], &asked)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn one_file_reaches_every_spool_and_the_first_spool_knows_its_archive() {
    let dir = tempfile::tempdir().unwrap();
    let table = jobs::open("memory", "n1").await.unwrap();
    let first = Spool::open(&dir.path().join("spool"), table.clone())
        .await
        .unwrap();
    let second = Spool::open_for(
        &dir.path().join("spool/upstream-research"),
        "stow:research",
        table.clone(),
    )
    .await
    .unwrap();
    // A new install: nothing waits, the first archive is recorded.
    first.check_owner("clinical", true).await.unwrap();
    let mut f = first.create_incoming().await.unwrap();
    f.write(b"DICM 1.2.3").await.unwrap();
    first
        .commit_with(f, &meta("1.2.3"), &[&second])
        .await
        .unwrap();
    for (spool, kind) in [(&first, "stow"), (&second, "stow:research")] {
        let jobs = table.list(Some(kind), None, 10).await.unwrap();
        assert_eq!(jobs.len(), 1, "{kind}");
        let p: StowPayload = serde_json::from_value(jobs[0].payload.clone()).unwrap();
        assert!(p.path.starts_with(spool.dir().join("ready")), "{kind}");
        assert_eq!(std::fs::read(&p.path).unwrap(), b"DICM 1.2.3");
    }

    // Instances wait in spool.dir: they belong to the archive recorded there.
    assert!(first.check_owner("research", true).await.is_err());
    first.check_owner("clinical", true).await.unwrap();
    // A single upstream takes them, as before routing.
    first.check_owner("default", false).await.unwrap();
    // A spool from before routing: with several upstreams, refused.
    std::fs::remove_file(first.dir().join(OWNER_FILE)).unwrap();
    assert!(first.check_owner("clinical", true).await.is_err());
}
