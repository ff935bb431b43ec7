//! The audit log: one JSON line per operation on patient data, on both
//! faces, saying who, what, the outcome and when; and patient data in no
//! other log line. DCMTK on the DIMSE face, plain HTTP with a bearer token
//! on the DICOMweb face, Orthanc behind both.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn every_operation_on_patient_data_is_audited_once_with_who_and_outcome() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let audit_file = state.path().join("audit.jsonl");
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    cfg.known_aes = vec![KnownAe::new("CT1", 104), KnownAe::new("LIMITED", 105)];
    let token_hash = pons::web::auth::hash_secret("viewer-token", true).unwrap();
    let toml = cfg.to_toml().replace(
        "[[ae]]\ntitle = \"LIMITED\"\n",
        "[[ae]]\ntitle = \"LIMITED\"\nservices = [\"echo\"]\n",
    ) + &format!(
        "\n[web.auth]\nkind = \"bearer\"\ntokens = [{{ name = \"viewer\", sha256 = \"{token_hash}\", permissions = [\"read\"] }}]\n\
         \n[audit]\nfile = {:?}\n",
        audit_file.display().to_string()
    );
    let pons = Pons::start(&toml);
    let files = testdata().ct(2).files(2);
    let (study, _, _, _) = file_uids(&files[0]);

    storescu("CT1", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(2, Duration::from_secs(20)), 2);
    let find = |calling: &str| findscu_study(calling, pons.dimse_port(), &study);
    assert!(find("CT1").status.success());
    find("LIMITED");

    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    let qido = format!("{base}/studies?StudyInstanceUID={study}");
    let ok = http(
        "GET",
        &qido,
        &[("Authorization", "Bearer viewer-token")],
        b"",
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let anonymous = http("GET", &qido, &[], b"").unwrap();
    assert_eq!(anonymous.status, 401);
    let metadata = http(
        "GET",
        &format!("{base}/studies/{study}/metadata"),
        &[("Authorization", "Bearer viewer-token")],
        b"",
    )
    .unwrap();
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    http(
        "GET",
        &format!("{}/healthz", pons.web_url().unwrap()),
        &[],
        b"",
    )
    .unwrap();

    let all = events(&audit_file);
    let summary: Vec<String> = all
        .iter()
        .map(|e| {
            let who = e.get("calling_ae").or(e.get("subject")).unwrap();
            format!(
                "{} {} {} {} {}",
                e["face"].as_str().unwrap(),
                e["service"].as_str().unwrap(),
                who.as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["study"].as_str().unwrap_or("-") == study
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "dimse C-STORE CT1 success true",
            "dimse C-STORE CT1 success true",
            "dimse C-FIND CT1 success true",
            "dimse C-FIND LIMITED refused true",
            "web QIDO-RS viewer success true",
            "web QIDO-RS unauthenticated refused true",
            "web WADO-RS metadata viewer success true",
        ],
        "{all:#?}"
    );
    for e in &all {
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    }
    assert_eq!(all[0]["status"], "0000");
    assert_eq!(all[3]["status"], "0124");
    assert_eq!(all[5]["status"], "401");

    // The ordinary log names no patient.
    let obj = dicom_object::open_file(&files[0]).unwrap();
    let name = obj
        .element(dicom_dictionary_std::tags::PATIENT_NAME)
        .unwrap()
        .to_str()
        .unwrap();
    let id = obj
        .element(dicom_dictionary_std::tags::PATIENT_ID)
        .unwrap()
        .to_str()
        .unwrap();
    let log = pons.log();
    for value in [name.trim(), id.trim()] {
        assert!(
            !value.is_empty() && !log.contains(value),
            "{value:?} in the log"
        );
    }
}
