//! Proves the real-peer harness works, without Pons: Orthanc starts, DCMTK
//! stores every sample transfer syntax and synthetic CT into it unchanged,
//! the stored data sets equal the originals, and Orthanc's storage survives
//! a restart.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[test]
fn orthanc_stores_every_sample_and_survives_restart() {
    let td = testdata();
    let ct = td.ct(200);
    let ct20 = &ct.instances[..20];

    // The sample set covers the transfer syntaxes a gateway meets.
    let syntaxes = td.sample_transfer_syntaxes();
    for ts in [
        "1.2.840.10008.1.2",      // implicit VR LE
        "1.2.840.10008.1.2.1",    // explicit VR LE
        "1.2.840.10008.1.2.2",    // explicit VR BE
        "1.2.840.10008.1.2.1.99", // deflated
        "1.2.840.10008.1.2.4.50", // JPEG baseline
        "1.2.840.10008.1.2.4.51", // JPEG extended
        "1.2.840.10008.1.2.4.70", // JPEG lossless
        "1.2.840.10008.1.2.4.80", // JPEG-LS lossless
        "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91", // JPEG 2000
        "1.2.840.10008.1.2.5",    // RLE
    ] {
        assert!(syntaxes.contains(ts), "no sample in {ts}: {syntaxes:?}");
    }

    let mut orthanc = Orthanc::start();
    assert_eq!(orthanc.instance_count(), 0);

    let echo = echoscu("HARNESS", orthanc.aet(), orthanc.dicom_port(), &[]);
    assert!(echo.status.success(), "echoscu: {echo:?}");

    storescu(
        "HARNESS",
        orthanc.aet(),
        orthanc.dicom_port(),
        &[&td.samples_dir],
        &[],
    )
    .assert_success();
    let ct_files: Vec<_> = ct20.iter().map(|i| i.path.clone()).collect();
    let out = storescu(
        "HARNESS",
        orthanc.aet(),
        orthanc.dicom_port(),
        &ct_files,
        &[],
    );
    out.assert_success();
    // Each file went in its own transfer syntax: storescu converted nothing.
    assert!(
        !out.stdout.contains("Converting transfer syntax")
            || out
                .stdout
                .lines()
                .filter(|l| l.contains("Converting transfer syntax"))
                .all(|l| {
                    let (a, b) = l.split_once(": ").unwrap().1.split_once(" -> ").unwrap();
                    a == b
                }),
        "storescu converted:\n{}",
        out.stdout
    );

    let expected: BTreeSet<String> = td
        .samples
        .iter()
        .chain(ct20)
        .map(|i| i.sop_instance.clone())
        .collect();
    assert_eq!(expected.len(), td.samples.len() + 20, "UIDs are unique");
    let stored = orthanc.instance_uids();
    let missing: Vec<_> = expected.difference(&stored).collect();
    assert!(missing.is_empty(), "missing in Orthanc: {missing:?}");
    assert_eq!(stored.len(), expected.len(), "unexpected extra instances");

    // Orthanc keeps what it received: same data set, same transfer syntax.
    let mut pairs = Vec::new();
    for inst in td.samples.iter().chain(ct20) {
        let bytes = orthanc.instance_file(&inst.sop_instance);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.dcm");
        std::fs::write(&p, &bytes).unwrap();
        let (_, ts) = file_meta_uids(&p).expect("Orthanc returns a PS3.10 file");
        assert_eq!(
            ts,
            inst.transfer_syntax,
            "{}: stored in another transfer syntax",
            inst.path.display()
        );
        pairs.push((inst.path.clone(), bytes));
    }
    if let Err(report) = compare_datasets(&pairs) {
        panic!("Orthanc changed data sets:\n{report}");
    }

    // DICOMweb answers too (QIDO-RS through the plugin).
    let studies = http(
        "GET",
        &format!("{}/studies", orthanc.dicomweb_url()),
        &[("Accept", "application/dicom+json")],
        b"",
    )
    .unwrap();
    assert_eq!(studies.status, 200, "{}", studies.text());
    assert!(!studies.json().as_array().unwrap().is_empty());

    // Storage survives a restart on the same ports.
    let count = orthanc.instance_count();
    let port = orthanc.dicom_port();
    orthanc.restart();
    assert_eq!(orthanc.dicom_port(), port);
    assert_eq!(orthanc.instance_count(), count);
    assert_eq!(orthanc.instance_uids(), stored);
}

#[test]
fn storescp_receives_from_storescu() {
    let td = testdata();
    let scp = StoreScp::start("SINK");
    let files: Vec<_> = td.samples.iter().take(5).map(|s| s.path.clone()).collect();
    storescu("HARNESS", scp.aet(), scp.port(), &files, &[]).assert_success();
    assert!(
        wait_until(Duration::from_secs(5), || scp.files().len() == 5),
        "storescp has {:?}\n{}",
        scp.files(),
        scp.log_tail(20)
    );
}

#[test]
fn pons_config_renders_valid_toml() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = PonsConfig::new("http://127.0.0.1:1/dicom-web", dir.path());
    c.known_aes.push(KnownAe::new("MODALITY", 104));
    c.spool_mode = SpoolMode::Direct;
    c.jobs_url = "memory".into();
    let text = c.to_toml();
    let t: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(t["spool"]["mode"].as_str(), Some("direct"));
    assert_eq!(t["ae"][0]["title"].as_str(), Some("MODALITY"));
    assert_eq!(
        t["dimse"]["listen"].as_str().unwrap(),
        format!("127.0.0.1:{}", c.dimse_port)
    );
}

#[test]
fn compare_datasets_detects_differences() {
    let ct = testdata().ct(200);
    let a = &ct.instances[0].path;
    let b = std::fs::read(&ct.instances[1].path).unwrap();
    let report = compare_datasets(&[(a.clone(), b)]).expect_err("different instances");
    assert!(report.contains("(0008,0018)"), "{report}");
    assert_same_dataset(a, &std::fs::read(a).unwrap());
}
