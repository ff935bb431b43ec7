//! Direction A storage commitment against real peers: a pynetdicom storage
//! commitment SCU (scripts/commit_scu.py) → Pons → Orthanc's DICOMweb,
//! which has no /commitment-requests, so Pons verifies with QIDO-RS. The
//! instances are stored through Pons first (DCMTK storescu, spool mode).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";

/// (SOP Class UID, SOP Instance UID) pairs.
type Refs = Vec<(String, String)>;

fn refs_of(instances: &[Instance]) -> Refs {
    instances
        .iter()
        .map(|i| (i.sop_class.clone(), i.sop_instance.clone()))
        .collect()
}

/// `commit_scu.py request` against Pons; its JSON line.
fn request(pons: &Pons, refs: &Refs, txn: &str, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refs.json");
    std::fs::write(&file, serde_json::to_vec(refs).unwrap()).unwrap();
    let out = script_command("commit_scu.py")
        .args(["request", "127.0.0.1", &pons.dimse_port().to_string()])
        .arg(&file)
        .args(["--txn", txn, "--called", pons.ae_title()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "commit_scu.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("commit_scu.py printed no JSON ({e}): {stdout}"))
}

/// `commit_scu.py listen PORT`: takes reports on new associations for
/// `wait_secs` at most.
fn listen(port: u16, wait_secs: u32) -> ScriptPeer {
    ScriptPeer::start(
        "commit_scu.py",
        &[
            "listen",
            &port.to_string(),
            "--wait",
            &wait_secs.to_string(),
        ],
    )
}

/// The reports a listener received (waits until the first, or its time is up).
fn reports(mut listener: ScriptPeer) -> Vec<Value> {
    listener.next_json()["reports"].as_array().unwrap().clone()
}

fn pairs(v: &Value) -> BTreeSet<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect()
}

/// (class, instance, Failure Reason) of a report's failed list.
fn failures(v: &Value) -> BTreeSet<(String, String, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().into(),
                p[1].as_str().unwrap().into(),
                p[2].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Orthanc, and Pons in front of it in verify mode, knowing the SCU as
/// MODALITY at `listen_port` (for reports on a new association).
/// One report, on the `via` ("same" or "new") association: `stored`
/// committed, the CT instance `missing` failed with 0112 (no such instance).
fn assert_one_missing(
    reports: &[Value],
    via: &str,
    txn: &str,
    stored: &[Instance],
    missing: &str,
    log: &str,
) {
    assert_eq!(reports.len(), 1, "{log}");
    let r = &reports[0];
    assert_eq!(r["via"], via);
    assert_eq!(r["event_type"], 2);
    assert_eq!(r["transaction_uid"], txn);
    assert_eq!(
        pairs(&r["committed"]),
        refs_of(stored).into_iter().collect()
    );
    assert_eq!(
        failures(&r["failed"]),
        [(CT.to_owned(), missing.to_owned(), 0x0112)]
            .into_iter()
            .collect()
    );
}

fn setup(state: &Path, listen_port: u16) -> (Orthanc, Pons) {
    setup_with(state, listen_port, "")
}

/// The same, with more `[dimse]` keys.
fn setup_with(state: &Path, listen_port: u16, dimse: &str) -> (Orthanc, Pons) {
    let orthanc = Orthanc::start();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state);
    cfg.known_aes.push(KnownAe::new("MODALITY", listen_port));
    let toml = cfg
        .to_toml()
        .replace("[dimse]\n", &format!("[dimse]\n{dimse}"))
        .replace("[upstream]\n", "[upstream]\ncommitment = \"verify\"\n")
        .replace("[spool]\n", "[spool]\nretry_max_secs = 4\n");
    (orthanc, Pons::start(&toml))
}

/// The commitment jobs, newest first.
fn commit_jobs(pons: &Pons) -> Vec<Value> {
    let url = format!("{}/jobs?kind=commit", pons.web_url().unwrap());
    let jobs = http("GET", &url, &[], b"").unwrap().json();
    jobs["jobs"].as_array().unwrap().clone()
}

fn store(pons: &Pons, instances: &[Instance]) {
    let files: Vec<_> = instances.iter().map(|i| i.path.clone()).collect();
    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
}

#[test]
fn all_present_is_event_type_1_on_the_same_association() {
    let state = tempfile::tempdir().unwrap();
    let (_orthanc, pons) = setup(state.path(), free_port());
    let ct = testdata().ct(200);
    let stored = &ct.instances[..40];
    store(&pons, stored);
    // At once: some instances are still in the spool, and must be waited for.
    let refs = refs_of(stored);
    let txn = "1.2.826.0.1.3680043.10.1055.1";
    let out = request(&pons, &refs, txn, &["--wait", "60"]);
    assert_eq!(out["status"], 0, "{out}");
    let reports = out["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{out}\n{}", pons.log());
    let r = &reports[0];
    assert_eq!(r["via"], "same");
    assert_eq!(r["event_type"], 1);
    assert_eq!(r["transaction_uid"], txn);
    assert_eq!(pairs(&r["committed"]), refs.iter().cloned().collect());
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
}

#[test]
fn missing_and_conflicting_instances_are_reported_on_a_new_association() {
    let state = tempfile::tempdir().unwrap();
    let listen_port = free_port();
    let (_orthanc, pons) = setup(state.path(), listen_port);
    let ct = testdata().ct(200);
    let stored = &ct.instances[40..60];
    store(&pons, stored);
    let mut refs = refs_of(stored);
    // Stored as CT, asked for as MR: a class/instance conflict.
    refs[3].0 = MR.into();
    let never: Refs = (1..=3)
        .map(|i| (CT.to_owned(), format!("1.2.826.0.1.3680043.10.1055.9.{i}")))
        .collect();
    refs.extend(never.iter().cloned());
    let txn = "1.2.826.0.1.3680043.10.1055.2";
    // The SCU releases at once; the report must come on a new association.
    let port = listen_port.to_string();
    let out = request(
        &pons,
        &refs,
        txn,
        &["--release", "--listen", &port, "--wait", "60"],
    );
    assert_eq!(out["status"], 0, "{out}");
    let reports = out["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{out}\n{}", pons.log());
    let r = &reports[0];
    assert_eq!(r["via"], "new");
    assert_eq!(r["calling_ae"], "PONS");
    assert_eq!(r["event_type"], 2);
    assert_eq!(r["transaction_uid"], txn);
    let mut want_failed: BTreeSet<(String, String, u64)> = never
        .iter()
        .map(|(c, i)| (c.clone(), i.clone(), 0x0112))
        .collect();
    want_failed.insert((MR.into(), stored[3].sop_instance.clone(), 0x0119));
    assert_eq!(failures(&r["failed"]), want_failed);
    let want_committed: BTreeSet<(String, String)> = refs_of(stored)
        .into_iter()
        .filter(|(_, i)| *i != stored[3].sop_instance)
        .collect();
    assert_eq!(pairs(&r["committed"]), want_committed);
}

#[test]
fn bad_and_duplicate_requests_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let (_orthanc, pons) = setup(state.path(), free_port());
    let ct = testdata().ct(200);
    let stored = &ct.instances[60..63];
    store(&pons, stored);
    let refs = refs_of(stored);
    let txn = "1.2.826.0.1.3680043.10.1055.3";
    // Role selection for Storage Commitment is granted as proposed.
    let first = request(&pons, &refs, txn, &["--wait", "60", "--role-selection"]);
    assert_eq!(first["roles"], serde_json::json!([true, true]), "{first}");
    assert_eq!(first["status"], 0, "{first}");
    assert_eq!(first["reports"][0]["event_type"], 1, "{first}");
    // The same Transaction UID again, after and during the first one's life.
    let again = request(&pons, &refs, txn, &["--wait", "0"]);
    assert_eq!(again["status"], 0x0115, "{again}");
    assert_eq!(
        again["error_comment"],
        "Transaction UID (0008,1195) already used"
    );
    let bad = request(&pons, &refs, "1.2.x", &["--wait", "0"]);
    assert_eq!(bad["status"], 0x0115, "{bad}");
    assert_eq!(
        bad["error_comment"],
        "Transaction UID (0008,1195) is not a valid UID"
    );
    let empty = request(
        &pons,
        &Vec::new(),
        "1.2.826.0.1.3680043.10.1055.4",
        &["--wait", "0"],
    );
    assert_eq!(empty["status"], 0x0115, "{empty}");
    assert_eq!(
        empty["error_comment"],
        "Referenced SOP Sequence (0008,1199) is missing or empty"
    );
    // Only the first request became a job, and it is done (marked so just
    // after the report went out: on a loaded machine, a moment later).
    assert!(
        wait_until(Duration::from_secs(10), || {
            let jobs = commit_jobs(&pons);
            jobs.len() == 1 && jobs[0]["state"] == "done"
        }),
        "{:?}",
        commit_jobs(&pons)
    );
}

#[test]
fn a_report_survives_a_restart_of_pons() {
    let state = tempfile::tempdir().unwrap();
    let listen_port = free_port();
    let (_orthanc, mut pons) = setup(state.path(), listen_port);
    let ct = testdata().ct(200);
    let stored = &ct.instances[80..90];
    store(&pons, stored);
    let mut refs = refs_of(stored);
    refs.push((CT.into(), "1.2.826.0.1.3680043.10.1055.9.9".into()));
    let txn = "1.2.826.0.1.3680043.10.1055.5";
    // Nobody listens at the SCU's address yet: the report cannot go out.
    let out = request(&pons, &refs, txn, &["--release", "--wait", "0"]);
    assert_eq!(out["status"], 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(60), || pons
            .log()
            .contains("N-EVENT-REPORT not delivered")),
        "{}",
        pons.log()
    );
    // A crash, then a new process with the same table.
    pons.kill9();
    pons.restart();
    let listener = listen(listen_port, 90);
    let reports = reports(listener);
    assert_one_missing(&reports, "new", txn, stored, &refs[10].1, &pons.log());
    // The archive was asked once: the result was kept across the restart.
    assert_eq!(
        pons.log().matches("archive answered").count(),
        1,
        "{}",
        pons.log()
    );
}

#[test]
fn instances_still_in_the_spool_are_waited_for() {
    let state = tempfile::tempdir().unwrap();
    let (mut orthanc, pons) = setup(state.path(), free_port());
    let ct = testdata().ct(200);
    let stored = &ct.instances[100..130];
    // The archive is down: the instances are acknowledged from the spool.
    orthanc.stop();
    store(&pons, stored);
    let refs = refs_of(stored);
    let txn = "1.2.826.0.1.3680043.10.1055.6";
    let asking = {
        let (pons_port, refs) = (pons.dimse_port(), refs.clone());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("refs.json");
        std::fs::write(&file, serde_json::to_vec(&refs).unwrap()).unwrap();
        let mut cmd = script_command("commit_scu.py");
        cmd.args(["request", "127.0.0.1", &pons_port.to_string()])
            .arg(&file)
            .args(["--txn", txn, "--wait", "120"]);
        std::thread::spawn(move || (cmd.output().unwrap(), dir))
    };
    // The job waits for the spool instead of asking the archive.
    assert!(
        wait_until(Duration::from_secs(30), || commit_jobs(&pons)
            .first()
            .and_then(|j| j["last_error"].as_str().map(str::to_owned))
            .is_some_and(|e| e.contains("30 spooled instance(s)"))),
        "{:?}\n{}",
        commit_jobs(&pons),
        pons.log()
    );
    orthanc.restart();
    let (out, _dir) = asking.join().unwrap();
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &out["reports"][0];
    assert_eq!(r["via"], "same", "{out}\n{}", pons.log());
    assert_eq!(r["event_type"], 1, "{out}");
    assert_eq!(pairs(&r["committed"]), refs.iter().cloned().collect());
}

#[test]
fn a_report_nobody_takes_fails_at_the_deadline() {
    let state = tempfile::tempdir().unwrap();
    // Nobody ever listens at MODALITY's address.
    let (_orthanc, pons) = setup_with(
        state.path(),
        free_port(),
        "commitment_report_deadline_secs = 5\n",
    );
    let ct = testdata().ct(200);
    let stored = &ct.instances[130..132];
    store(&pons, stored);
    let txn = "1.2.826.0.1.3680043.10.1055.7";
    let out = request(&pons, &refs_of(stored), txn, &["--release", "--wait", "0"]);
    assert_eq!(out["status"], 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(30), || commit_jobs(&pons)
            .first()
            .is_some_and(|j| j["state"] == "failed")),
        "{:?}",
        commit_jobs(&pons)
    );
    let job = &commit_jobs(&pons)[0];
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("deadline passed"), "{error}");
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job}");
}

/// Two Pons share a PostgreSQL job table. A takes the N-ACTION and starts
/// the job, but its archive never answers (a listener that accepts and stays
/// silent: a hung origin no real peer can be made into); A dies holding the
/// job. B, whose archive answers, takes the job over once A's lease has
/// run out and delivers the report on a new association.
#[test]
fn a_commitment_job_of_a_killed_pons_is_finished_by_another() {
    let pg = Postgres::start();
    let jobs_url = pg.create_database("pons");
    let orthanc = Orthanc::start();
    let ct = testdata().ct(200);
    let stored = &ct.instances[140..150];
    let files: Vec<_> = stored.iter().map(|i| i.path.clone()).collect();
    storescu("MODALITY", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();

    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}/dicom-web", hung.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().collect();
        drop(held);
    });
    let listen_port = free_port();
    let start = |upstream: &str, state: &Path| {
        let mut cfg = PonsConfig::new(upstream, state);
        cfg.jobs_url = jobs_url.clone();
        cfg.known_aes.push(KnownAe::new("MODALITY", listen_port));
        let toml = cfg
            .to_toml()
            .replace("[upstream]\n", "[upstream]\ncommitment = \"verify\"\n")
            .replace("[jobs]\n", "[jobs]\nlease_secs = 3\n");
        Pons::start(&toml)
    };
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(&hung_url, state_a.path());

    let mut refs = refs_of(stored);
    refs.push((CT.into(), "1.2.826.0.1.3680043.10.1055.9.7".into()));
    let txn = "1.2.826.0.1.3680043.10.1055.8";
    let out = request(&a, &refs, txn, &["--release", "--wait", "0"]);
    assert_eq!(out["status"], 0, "{out}");
    // A has claimed the job and is stuck asking its archive.
    assert!(
        wait_until(Duration::from_secs(30), || commit_jobs(&a)
            .first()
            .is_some_and(|j| j["state"] == "running")),
        "{:?}\n{}",
        commit_jobs(&a),
        a.log()
    );
    let b = start(&orthanc.dicomweb_url(), state_b.path());
    let listener = listen(listen_port, 60);
    a.kill9();

    let reports = reports(listener);
    assert_one_missing(&reports, "new", txn, stored, &refs[10].1, &b.log());
    assert!(b.log().contains("archive answered"), "{}", b.log());
    // B marks the job done after the report's response and the release.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let jobs = commit_jobs(&b);
            jobs.len() == 1 && jobs[0]["state"] == "done"
        }),
        "{:?}",
        commit_jobs(&b)
    );
}

/// Sup 234's chain: a pynetdicom SCU → Pons A (DIMSE → DICOMweb) → Pons B
/// (DICOMweb → DIMSE) → Orthanc as the PACS. The instances are stored
/// through both, then committed through both: A posts to B's
/// /commitment-requests, B asks Orthanc with N-ACTION, Orthanc reports to B,
/// B's result goes back to the SCU as A's N-EVENT-REPORT.
#[test]
fn commitment_through_a_chain_of_two_pons() {
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg_b = PonsConfig::new("http://127.0.0.1:9/dicom-web", state_b.path());
    cfg_b.ae_title = "PONSB".into();
    let orthanc = Orthanc::start_with_modalities(&[Modality::new("PONSB", cfg_b.dimse_port)]);
    cfg_b.pacs = vec![PacsEntry::new("pacs", orthanc.aet(), orthanc.dicom_port())];
    let b = Pons::start(&cfg_b.to_toml());
    let cfg_a = PonsConfig::new(
        &format!("{}/dicom-web", b.web_url().unwrap()),
        state_a.path(),
    );
    let a = Pons::start(
        &cfg_a
            .to_toml()
            .replace("[upstream]\n", "[upstream]\ncommitment = \"dicomweb\"\n"),
    );

    let ct = testdata().ct(200);
    let stored = &ct.instances[150..160];
    store(&a, stored);
    assert_eq!(orthanc.wait_for_instances(10, Duration::from_secs(60)), 10);
    let mut refs = refs_of(stored);
    refs.push((CT.into(), "1.2.826.0.1.3680043.10.1055.9.8".into()));
    let txn = "1.2.826.0.1.3680043.10.1055.9";
    let out = request(&a, &refs, txn, &["--wait", "60"]);
    assert_eq!(out["status"], 0, "{out}");
    let reports = out["reports"].as_array().unwrap();
    let logs = format!("{out}\nA:\n{}\nB:\n{}", a.log(), b.log());
    assert_one_missing(reports, "same", txn, stored, &refs[10].1, &logs);
    // B asked Orthanc, which reported to B on a new association.
    assert!(b.log().contains("\"new association\""), "{}", b.log());
}
