//! The DICOMweb worklist search (direction B): GET
//! /modality-scheduled-procedure-steps becomes a Modality Worklist C-FIND to
//! Orthanc's ModalityWorklists plugin, whose worklist files the test writes
//! with DCMTK's dump2dcm. Exact match sets for modality, station AE title
//! and a date range.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// (accession, patient id, modality, station AE, date)
const STEPS: &[(&str, &str, &str, &str, &str)] = &[
    ("ACC1", "P1", "CT", "CT1", "20261203"),
    ("ACC2", "P2", "MR", "MR1", "20261203"),
    ("ACC3", "P3", "CT", "CT2", "20261205"),
];

fn write_worklist(dir: &Path) {
    for (i, (acc, pid, modality, station, date)) in STEPS.iter().enumerate() {
        let dump = format!(
            "(0008,0005) CS [ISO_IR 100]\n\
             (0008,0050) SH [{acc}]\n\
             (0010,0010) PN [Patient^{pid}]\n\
             (0010,0020) LO [{pid}]\n\
             (0020,000d) UI [1.2.826.0.1.3680043.10.999.77.{i}]\n\
             (0032,1060) LO [Procedure {acc}]\n\
             (0040,0100) SQ (Sequence with explicit length #=1)\n\
             (fffe,e000) na (Item with explicit length #=5)\n\
             (0008,0060) CS [{modality}]\n\
             (0040,0001) AE [{station}]\n\
             (0040,0002) DA [{date}]\n\
             (0040,0003) TM [0900]\n\
             (0040,0009) SH [SPS{i}]\n\
             (fffe,e00d) na (ItemDelimitationItem for re-encoding)\n\
             (fffe,e0dd) na (SequenceDelimitationItem for re-encod.)\n\
             (0040,1001) SH [RP{i}]\n"
        );
        let dump_path = dir.join(format!("{acc}.dump"));
        std::fs::write(&dump_path, dump).unwrap();
        let out = dcmtk("dump2dcm")
            .arg(&dump_path)
            .arg(dir.join(format!("{acc}.wl")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump2dcm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(dump_path).unwrap();
    }
}

fn accessions(rsp: &HttpResponse) -> BTreeSet<String> {
    rsp.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["00080050"]["Value"][0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn worklist_searches_return_exactly_the_matching_steps() {
    let worklist = tempfile::tempdir().unwrap();
    write_worklist(worklist.path());
    let orthanc = Orthanc::start_with(OrthancOptions {
        extra: json!({
            "Plugins": [ORTHANC_DICOMWEB_PLUGIN, "/usr/share/orthanc/plugins/libModalityWorklists.so"],
            "Worklists": { "Enable": true, "Database": worklist.path() },
            "DicomAlwaysAllowFindWorklist": true,
        }),
        ..Default::default()
    });
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    let base = format!(
        "{}/dicom-web/modality-scheduled-procedure-steps",
        pons.web_url().unwrap()
    );
    let get = |query: &str| {
        let rsp = http(
            "GET",
            &format!("{base}{query}"),
            &[("Accept", "application/dicom+json")],
            b"",
        )
        .unwrap();
        assert_eq!(rsp.status, 200, "{query}: {}", rsp.text());
        rsp
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    assert_eq!(accessions(&get("")), set(&["ACC1", "ACC2", "ACC3"]));
    assert_eq!(accessions(&get("?Modality=CT")), set(&["ACC1", "ACC3"]));
    assert_eq!(
        accessions(&get("?ScheduledStationAETitle=MR1")),
        set(&["ACC2"])
    );
    assert_eq!(
        accessions(&get(
            "?ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=20261204-20261206"
        )),
        set(&["ACC3"])
    );
    assert_eq!(
        accessions(&get(
            "?Modality=CT&ScheduledProcedureStepStartDate=20261203"
        )),
        set(&["ACC1"])
    );
    assert_eq!(accessions(&get("?PatientID=P2")), set(&["ACC2"]));

    // The step's attributes come back inside its sequence, as asked.
    let one = get("?PatientID=P3");
    let step: &Value = &one.json()[0];
    let sps = &step["00400100"]["Value"][0];
    assert_eq!(sps["00080060"]["Value"][0], "CT");
    assert_eq!(sps["00400001"]["Value"][0], "CT2");
    assert_eq!(sps["00400002"]["Value"][0], "20261205");
    assert_eq!(step["00100010"]["Value"][0]["Alphabetic"], "Patient^P3");

    // Paging: one at a time, with the Warning that more exist.
    let page = get("?limit=1");
    assert_eq!(accessions(&page).len(), 1);
    assert!(page
        .header("warning")
        .is_some_and(|w| w.contains("additional results")));
    assert_eq!(
        accessions(&get("?includefield=all&Modality=MR")),
        set(&["ACC2"])
    );

    let bad = http(
        "GET",
        &format!("{base}?ScheduledProcedureStepStartDate=someday"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());
}
