//! Several called AE titles on one DIMSE port, each routed to its own
//! archive (two Orthanc origins): CT_ARCHIVE to "clinical", MR_ARCHIVE to
//! "research", and MR sent to CT_ARCHIVE also to "research". Each archive
//! receives exactly its instances, one archive down holds back only its own
//! spool, a C-FIND per route sees only its archive, an unknown called AE
//! is refused, and storage commitment asks every archive an instance went to.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Copies of CT files as a new study of `modality` (new study, series and
/// instance UIDs).
fn as_new_study(files: &[PathBuf], dir: &Path, modality: &str) -> Vec<PathBuf> {
    let modality = format!("(0008,0060)={modality}");
    std::fs::create_dir_all(dir).unwrap();
    let copies: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let to = dir.join(format!("mr{i}.dcm"));
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    // One study for all: -gst on the first, then its UIDs copied to the rest.
    dcmodify(&["-m", &modality, "-gst", "-gse", "-gin"], &copies[0]);
    let (study, series, _, _) = file_uids(&copies[0]);
    let study = format!("(0020,000d)={study}");
    let series = format!("(0020,000e)={series}");
    for c in &copies[1..] {
        dcmodify(&["-m", &modality, "-gin", "-m", &study, "-m", &series], c);
    }
    copies
}

fn dcmodify(args: &[&str], file: &Path) {
    let out = dcmtk("dcmodify")
        .arg("-nb")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dcmodify {args:?}: {err}");
}

fn sop_uids(files: &[PathBuf]) -> BTreeSet<String> {
    files.iter().map(|f| file_uids(f).2).collect()
}

fn studies_via(called: &str, pons: &Pons) -> BTreeSet<String> {
    let keys: Vec<std::ffi::OsString> = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]
        .iter()
        .map(Into::into)
        .collect();
    let r = findscu_extract(called, pons.dimse_port(), &["-S"], &keys);
    r.matches
        .iter()
        .map(|m| {
            m.get(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

fn commit(pons: &Pons, called: &str, files: &[PathBuf], txn: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<(String, String)> = files
        .iter()
        .map(|f| (file_meta_uids(f).unwrap().0, file_uids(f).2))
        .collect();
    let file = dir.path().join("refs.json");
    std::fs::write(&file, serde_json::to_vec(&refs).unwrap()).unwrap();
    let out = script_command("commit_scu.py")
        .args(["request", "127.0.0.1", &pons.dimse_port().to_string()])
        .arg(&file)
        .args(["--txn", txn, "--called", called, "--wait", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "commit_scu.py: {stdout}");
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
    answer["reports"][0].clone()
}

fn failed_uids(report: &Value) -> BTreeSet<String> {
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[1].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn called_ae_titles_route_to_their_own_archives() {
    let clinical = Orthanc::start();
    let mut research = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = PonsConfig::new(&clinical.dicomweb_url(), state.path())
        .to_toml()
        .replacen("[upstream]\n", "[[upstream]]\nname = \"clinical\"\n", 1);
    config.push_str(&format!(
        "
[[upstream]]
name = \"research\"
url = \"{}\"

[[route]]
called_ae = \"CT_ARCHIVE\"
upstream = \"clinical\"

[[route]]
called_ae = \"MR_ARCHIVE\"
upstream = \"research\"

# MR sent to CT_ARCHIVE goes to research as well.
[[route]]
called_ae = \"CT_ARCHIVE\"
upstream = \"research\"
modality = [\"MR\"]
",
        research.dicomweb_url()
    ));
    let pons = Pons::start(&config);
    let data = testdata().ct(6);
    let ct = data.files(4);
    let mr = as_new_study(&data.files(3), &state.path().join("mr"), "MR");
    let both = as_new_study(&data.files(6)[5..], &state.path().join("both"), "MR");
    let wait = Duration::from_secs(60);

    // CT to clinical, MR to research, the MR sent to CT_ARCHIVE to both.
    storescu("CT1", "CT_ARCHIVE", pons.dimse_port(), &ct, &[]).assert_success();
    storescu("MR1", "MR_ARCHIVE", pons.dimse_port(), &mr, &[]).assert_success();
    storescu("MR1", "CT_ARCHIVE", pons.dimse_port(), &both, &[]).assert_success();
    clinical.wait_for_instances(5, wait);
    research.wait_for_instances(4, wait);
    let expected_clinical: BTreeSet<String> =
        sop_uids(&ct).union(&sop_uids(&both)).cloned().collect();
    let expected_research: BTreeSet<String> =
        sop_uids(&mr).union(&sop_uids(&both)).cloned().collect();
    std::thread::sleep(Duration::from_secs(1)); // nothing more arrives
    assert_eq!(clinical.instance_uids(), expected_clinical);
    assert_eq!(research.instance_uids(), expected_research);

    // A C-FIND through each called AE sees only its archive.
    let ct_study = file_uids(&ct[0]).0;
    let mr_study = file_uids(&mr[0]).0;
    let both_study = file_uids(&both[0]).0;
    assert_eq!(
        studies_via("CT_ARCHIVE", &pons),
        BTreeSet::from([ct_study.clone(), both_study.clone()])
    );
    assert_eq!(
        studies_via("MR_ARCHIVE", &pons),
        BTreeSet::from([mr_study.clone(), both_study.clone()])
    );

    // An unknown called AE title is refused at association time.
    let refused = echoscu("CT1", "NOBODY", pons.dimse_port(), &[]);
    assert!(!refused.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(text.contains("Called AE Title Not Recognized"), "{text}");
    assert!(echoscu("CT1", "MR_ARCHIVE", pons.dimse_port(), &[])
        .status
        .success());

    // Storage commitment to CT_ARCHIVE asks clinical, and research for the
    // MR that went there too.
    let mut asked = ct.clone();
    asked.extend(both.iter().cloned());
    let report = commit(&pons, "CT_ARCHIVE", &asked, "2.25.7001");
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(report["committed"].as_array().unwrap().len(), 5);
    let lost = file_uids(&both[0]).2;
    let id = research.instance_id(&lost).unwrap();
    let rsp = http(
        "DELETE",
        &format!("{}/instances/{id}", research.rest_url()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let report = commit(&pons, "CT_ARCHIVE", &asked, "2.25.7002");
    assert_eq!(report["event_type"], 2, "{report}");
    assert_eq!(failed_uids(&report), BTreeSet::from([lost]));

    // research down: clinical keeps receiving; research's instances wait in
    // their own spool and arrive once it is back.
    research.stop();
    let more_ct = as_new_study(&data.files(2), &state.path().join("ct2"), "CT");
    let more_mr = as_new_study(&data.files(2), &state.path().join("mr2"), "MR");
    storescu("MR1", "MR_ARCHIVE", pons.dimse_port(), &more_mr, &[]).assert_success();
    storescu("CT1", "CT_ARCHIVE", pons.dimse_port(), &more_ct, &[]).assert_success();
    assert_eq!(
        clinical.wait_for_instances(7, wait),
        7,
        "clinical held back"
    );
    assert!(clinical.instance_uids().is_superset(&sop_uids(&more_ct)));
    // Still ready (one archive answers), and /readyz names the one down.
    let readyz = format!("{}/readyz", pons.web_url().unwrap());
    let rsp = http("GET", &readyz, &[], b"").unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let body = rsp.json();
    assert_eq!(body["upstreams"]["clinical"], "ok", "{body}");
    assert_ne!(body["upstreams"]["research"], "ok", "{body}");
    assert!(
        body["upstream"].as_str().unwrap().starts_with("research: "),
        "{body}"
    );
    research.restart();
    assert_eq!(research.wait_for_instances(5, wait), 5);
    assert!(research.instance_uids().is_superset(&sop_uids(&more_mr)));
}
