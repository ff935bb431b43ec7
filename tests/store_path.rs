//! Direction A ingest against real peers: DCMTK storescu → Pons → Orthanc's
//! DICOMweb (STOW-RS), in spool and direct mode, with the archive and Pons
//! failing mid-run.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every instance is in Orthanc, with the data set that was sent. (storescu
/// itself drops group lengths and trailing padding, so the comparison is by
/// element, through pydicom.)
fn assert_archived_identically(orthanc: &Orthanc, instances: &[&Instance]) {
    let stored = orthanc.instance_uids();
    let missing: Vec<_> = instances
        .iter()
        .filter(|i| !stored.contains(&i.sop_instance))
        .map(|i| i.path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "not archived: {missing:#?}");
    let pairs: Vec<(PathBuf, Vec<u8>)> = instances
        .iter()
        .map(|i| (i.path.clone(), orthanc.instance_file(&i.sop_instance)))
        .collect();
    if let Err(report) = compare_datasets(&pairs) {
        panic!("archived data sets differ:\n{report}");
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

fn mixed_instances(n_ct: usize) -> Vec<Instance> {
    let data = testdata();
    let mut all = data.samples.clone();
    all.extend(data.ct(200).instances.into_iter().take(n_ct));
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
    let owned = mixed_instances(200);
    let instances: Vec<&Instance> = owned.iter().collect();
    assert!(instances.len() >= 200);
    let syntaxes: BTreeSet<_> = instances
        .iter()
        .map(|i| i.transfer_syntax.as_str())
        .collect();
    assert!(
        syntaxes.len() >= 8,
        "too few transfer syntaxes: {syntaxes:?}"
    );
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
    assert!(wait_until(Duration::from_secs(60), || orthanc
        .instance_count()
        >= 20));
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
    // storescu waits for each answer before the next instance: the last one
    // in the spool may not have been answered yet when Pons dies.
    let ready = state.path().join("spool/ready");
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(&ready).map(|d| d.count()).unwrap_or(0) >= 60
    }));
    pons.kill9();
    let out = sender.join().unwrap();
    assert!(
        !out.success,
        "storescu cannot have finished: Pons was killed"
    );
    let acked = acknowledged(&format!("{}{}", out.stdout, out.stderr), &files);
    assert!(
        acked.len() >= 50 && acked.len() < 200,
        "acked {}",
        acked.len()
    );

    orthanc.restart();
    pons.restart();
    let expected: Vec<&Instance> = ct
        .instances
        .iter()
        .filter(|i| acked.contains(&i.path))
        .collect();
    assert!(
        wait_until(Duration::from_secs(120), || {
            let stored = orthanc.instance_uids();
            expected.iter().all(|i| stored.contains(&i.sop_instance))
        }),
        "{}",
        pons.log()
    );
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
    let out = storescu("MODALITY", "PONS", pons.dimse_port(), &files, &["-d"]);
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.success);
    assert!(!log.contains("0x0000: Success"), "{log}");
    // storescu stops at the first refusal; every answer it got was one.
    let answers = log.matches("DIMSE Status ").count();
    assert!(answers >= 1, "{log}");
    assert_eq!(
        log.matches("DIMSE Status                  : 0xa700")
            .count(),
        answers,
        "{log}"
    );
    assert_eq!(
        log.matches("[archive unreachable; retry later]").count(),
        answers,
        "{log}"
    );
    orthanc.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(orthanc.instance_count(), 0);
    assert!(
        !Path::new(&state.path().join("spool/ready")).exists()
            || std::fs::read_dir(state.path().join("spool/ready"))
                .unwrap()
                .count()
                == 0
    );
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
    assert!(wait_until(Duration::from_secs(30), || orthanc
        .instance_count()
        >= 5));
    let status = pons
        .terminate(Duration::from_secs(30))
        .expect("pons must exit by itself");
    assert!(status.success(), "exit status {status}");
    sender.join().unwrap().assert_success();
    // Whatever the forwarder had not sent yet goes out after the restart.
    pons.restart();
    assert_eq!(
        orthanc.wait_for_instances(100, Duration::from_secs(60)),
        100
    );
}

/// What a broken sender gets from the real store path (not a test sink):
/// a truncated data set → C000, a data set whose SOP Instance UID differs
/// from the command's → A900, an abort mid-transfer → nothing; and none of
/// them is ever spooled or archived. Our own SCU misbehaves on purpose: no
/// real peer produces these.
#[test]
fn broken_transfers_are_refused_and_never_reach_the_archive() {
    use pons::dimse::client::{Proposal, ScuAssociation, ScuConfig};
    use pons::dimse::message::Command;

    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let pons = Pons::start(&cfg.to_toml());
    let ct = &testdata().ct(200).instances[0];
    let bytes = std::fs::read(&ct.path).unwrap();
    // The data set follows the meta group (explicit VR LE group length at 140).
    let meta_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let data = &bytes[144 + meta_len..];
    let scu = ScuConfig {
        calling_ae: "MODALITY".into(),
        called_ae: "PONS".into(),
        address: format!("127.0.0.1:{}", pons.dimse_port()),
        max_pdu: 16384,
        timeout: Duration::from_secs(10),
        tls: None,
    };
    let proposal = Proposal {
        abstract_syntax: ct.sop_class.clone(),
        transfer_syntaxes: vec![ct.transfer_syntax.clone()],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a = ScuAssociation::connect(&scu, &[proposal]).await.unwrap();
        let (pc, _) = a.accepted_context(&ct.sop_class).unwrap();
        let rq = Command::c_store_rq(1, &ct.sop_class, &ct.sop_instance);
        a.send(pc, &rq, Some(&data[..data.len() / 2]))
            .await
            .unwrap();
        let rsp = a.receive().await.unwrap().command;
        assert_eq!(rsp.status, Some(0xC000), "{rsp:?}");
        assert!(rsp.error_comment.unwrap().contains("truncated"));

        let other = format!("{}.9", ct.sop_instance);
        let rq = Command::c_store_rq(2, &ct.sop_class, &other);
        a.send(pc, &rq, Some(data)).await.unwrap();
        let rsp = a.receive().await.unwrap().command;
        assert_eq!(rsp.status, Some(0xA900), "{rsp:?}");

        let rq = Command::c_store_rq(3, &ct.sop_class, &ct.sop_instance);
        a.send(pc, &rq, None).await.unwrap();
        a.send_raw_fragment(pc, false, false, data[..1000].to_vec())
            .await
            .unwrap();
        a.abort().await.unwrap();
    });
    std::thread::sleep(Duration::from_secs(1));
    let count = |d: &str| {
        std::fs::read_dir(state.path().join("spool").join(d))
            .unwrap()
            .count()
    };
    assert_eq!((count("incoming"), count("ready")), (0, 0));
    assert_eq!(orthanc.instance_count(), 0);
}
