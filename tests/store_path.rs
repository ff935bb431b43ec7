//! Direction A ingest against real peers: DCMTK storescu → Pons → Orthanc's
//! DICOMweb (STOW-RS), in spool and direct mode, with the archive and Pons
//! failing mid-run.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The data set bytes of a PS3.10 file: everything after the meta group.
fn data_set(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[128..132], b"DICM", "not a PS3.10 file");
    // (0002,0000) UL group length, explicit VR LE: tag 4 + VR 2 + length 2 + value 4.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + group_len..]
}

/// Every instance is in Orthanc, with exactly the data set bytes that were sent.
fn assert_archived_identically(orthanc: &Orthanc, instances: &[&Instance]) {
    let stored = orthanc.instance_uids();
    let missing: Vec<_> = instances
        .iter()
        .filter(|i| !stored.contains(&i.sop_instance))
        .map(|i| i.path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "not archived: {missing:#?}");
    for i in instances {
        let original = std::fs::read(&i.path).unwrap();
        let archived = orthanc.instance_file(&i.sop_instance);
        assert!(
            data_set(&original) == data_set(&archived),
            "{} ({}) differs in the archive",
            i.path.display(),
            i.transfer_syntax
        );
    }
}

/// Instances storescu -v says got a Success C-STORE-RSP.
fn acknowledged(stdout_and_err: &str, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    // storescu -v logs "Sending file: X" ... "Received Store Response (Success)".
    let mut current: Option<PathBuf> = None;
    let mut ok = BTreeSet::new();
    for line in stdout_and_err.lines() {
        if let Some(f) = line.split("Sending file: ").nth(1) {
            current = Some(PathBuf::from(f.trim()));
        } else if line.contains("Received Store Response (Success)") {
            if let Some(f) = current.take() {
                ok.insert(f);
            }
        }
    }
    assert!(ok.iter().all(|f| files.contains(f)));
    ok
}

fn mixed_instances(n_ct: usize) -> Vec<&'static Instance> {
    let data = testdata();
    let mut all: Vec<&Instance> = data.samples.iter().collect();
    let ct = data.ct(200);
    let ct: &'static CtSet = Box::leak(Box::new(ct));
    all.extend(ct.instances.iter().take(n_ct));
    all
}

fn store_all_and_check(mode: SpoolMode) {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.spool_mode = mode;
    if mode == SpoolMode::Direct {
        cfg.jobs_url = "memory".into();
    }
    let pons = Pons::start(&cfg.to_toml());
    let instances = mixed_instances(200);
    assert!(instances.len() >= 200);
    let syntaxes: BTreeSet<_> = instances.iter().map(|i| i.transfer_syntax.as_str()).collect();
    assert!(syntaxes.len() >= 8, "too few transfer syntaxes: {syntaxes:?}");
    let files: Vec<PathBuf> = instances.iter().map(|i| i.path.clone()).collect();
    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    let n = orthanc.wait_for_instances(instances.len(), Duration::from_secs(120));
    assert_eq!(n, instances.len(), "{}", pons.log());
    assert_archived_identically(&orthanc, &instances);
}

#[test]
fn spool_mode_lands_every_instance_identically() {
    store_all_and_check(SpoolMode::Spool);
}

#[test]
fn direct_mode_lands_every_instance_identically() {
    store_all_and_check(SpoolMode::Direct);
}

#[test]
fn archive_down_mid_run_in_spool_mode_loses_nothing() {
    let mut orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let pons = Pons::start(&cfg.to_toml());
    let ct = testdata().ct(200);
    let files = ct.files(200);
    let port = pons.dimse_port();
    let sender = {
        let files = files.clone();
        std::thread::spawn(move || storescu("MODALITY", "PONS", port, &files, &[]))
    };
    // Let part of the run reach the archive, then take the archive away.
    assert!(wait_until(Duration::from_secs(60), || orthanc.instance_count() >= 20));
    orthanc.stop();
    let out = sender.join().unwrap();
    out.assert_success();
    // Every instance was acknowledged while the archive was down for part of the run.
    orthanc.restart();
    let n = orthanc.wait_for_instances(200, Duration::from_secs(120));
    assert_eq!(n, 200, "{}", pons.log());
    let instances: Vec<&Instance> = ct.instances.iter().collect();
    assert_archived_identically(&orthanc, &instances);
}

#[test]
fn pons_killed_mid_run_delivers_every_acknowledged_instance_after_restart() {
    let mut orthanc = Orthanc::start();
    let url = orthanc.dicomweb_url();
    // The archive is down: everything acknowledged sits in the spool when Pons dies.
    orthanc.stop();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&url, state.path());
    let mut pons = Pons::start(&cfg.to_toml());
    let ct = testdata().ct(200);
    let files = ct.files(200);
    let port = pons.dimse_port();
    let sender = {
        let files = files.clone();
        std::thread::spawn(move || storescu("MODALITY", "PONS", port, &files, &[]))
    };
    let ready = state.path().join("spool/ready");
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(&ready).map(|d| d.count()).unwrap_or(0) >= 50
    }));
    pons.kill9();
    let out = sender.join().unwrap();
    assert!(!out.success, "storescu cannot have finished: Pons was killed");
    let acked = acknowledged(&format!("{}{}", out.stdout, out.stderr), &files);
    assert!(acked.len() >= 50 && acked.len() < 200, "acked {}", acked.len());

    orthanc.restart();
    pons.restart();
    let expected: Vec<&Instance> = ct.instances.iter().filter(|i| acked.contains(&i.path)).collect();
    assert!(wait_until(Duration::from_secs(120), || {
        let stored = orthanc.instance_uids();
        expected.iter().all(|i| stored.contains(&i.sop_instance))
    }), "{}", pons.log());
    assert_archived_identically(&orthanc, &expected);
    // Nothing half-received was kept.
    let incoming = state.path().join("spool/incoming");
    assert_eq!(std::fs::read_dir(incoming).unwrap().count(), 0);
}

#[test]
fn direct_mode_with_the_archive_down_reports_failure_and_stores_nothing() {
    let mut orthanc = Orthanc::start();
    let url = orthanc.dicomweb_url();
    orthanc.stop();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&url, state.path());
    cfg.spool_mode = SpoolMode::Direct;
    let pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(200).files(3);
    let out = storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]);
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(acknowledged(&log, &files).is_empty(), "{log}");
    assert!(log.contains("Out of Resources") || log.contains("A700"), "{log}");
    assert!(log.contains("archive unreachable"), "Error Comment missing:\n{log}");
    orthanc.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(orthanc.instance_count(), 0);
    assert!(!Path::new(&state.path().join("spool/ready")).exists()
        || std::fs::read_dir(state.path().join("spool/ready")).unwrap().count() == 0);
}

#[test]
fn sigterm_lets_the_running_association_finish() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let mut pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(200).files(100);
    let port = pons.dimse_port();
    let sender = {
        let files = files.clone();
        std::thread::spawn(move || storescu("MODALITY", "PONS", port, &files, &[]))
    };
    assert!(wait_until(Duration::from_secs(30), || orthanc.instance_count() >= 5));
    let status = pons.terminate(Duration::from_secs(30)).expect("pons must exit by itself");
    assert!(status.success(), "exit status {status}");
    sender.join().unwrap().assert_success();
    // Whatever the forwarder had not sent yet goes out after the restart.
    pons.restart();
    assert_eq!(orthanc.wait_for_instances(100, Duration::from_secs(60)), 100);
}
