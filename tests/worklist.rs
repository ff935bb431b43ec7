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

    // The same worklist as UPS-RS workitems (search only).
    let workitems = format!("{}/dicom-web/workitems", pons.web_url().unwrap());
    let items = |query: &str| {
        let rsp = http(
            "GET",
            &format!("{workitems}{query}"),
            &[("Accept", "application/dicom+json")],
            b"",
        )
        .unwrap();
        assert_eq!(rsp.status, 200, "{query}: {}", rsp.text());
        rsp.json().as_array().unwrap().clone()
    };
    let item_accessions = |items: Vec<Value>| {
        items
            .iter()
            .map(|i| {
                // Scheduled, a UPS, the request inside Referenced Request Sequence.
                assert_eq!(i["00741000"]["Value"][0], "SCHEDULED");
                assert_eq!(i["00080016"]["Value"][0], "1.2.840.10008.5.1.4.34.6.1");
                i["0040A370"]["Value"][0]["00080050"]["Value"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        item_accessions(items("?ScheduledStationClassCodeSequence.CodeValue=CT")),
        set(&["ACC1", "ACC3"])
    );
    assert_eq!(
        item_accessions(items("?ScheduledStationNameCodeSequence.CodeValue=MR1")),
        set(&["ACC2"])
    );
    assert_eq!(
        item_accessions(items(
            "?ScheduledProcedureStepStartDateTime=20261203080000-20261203100000"
        )),
        set(&["ACC1", "ACC2"])
    );
    assert_eq!(
        // Asked of the worklist by day; the time of day is checked by Pons.
        item_accessions(items(
            "?ScheduledProcedureStepStartDateTime=20261203100000-20261205"
        )),
        set(&["ACC3"])
    );
    assert!(items("?ProcedureStepState=COMPLETED").is_empty());
    let mr = &items("?ReferencedRequestSequence.AccessionNumber=ACC2")[0];
    assert_eq!(mr["00404005"]["Value"][0], "202612030900");
    assert_eq!(mr["00404026"]["Value"][0]["00080100"]["Value"][0], "MR");
    let bad = http(
        "GET",
        &format!("{workitems}?ProcedureStepState=DONE"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());
    let bad_time = http(
        "GET",
        &format!("{workitems}?ScheduledProcedureStepStartDateTime=2026-12-03"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(bad_time.status, 400, "{}", bad_time.text());
    assert!(
        bad_time
            .text()
            .contains("ScheduledProcedureStepStartDateTime"),
        "{}",
        bad_time.text()
    );
    // The rest of UPS-RS is not served, and says so.
    let retrieve = http("GET", &format!("{workitems}/1.2.3"), &[], b"").unwrap();
    assert_eq!(retrieve.status, 501, "{}", retrieve.text());
    assert!(
        retrieve.text().contains("worklist search"),
        "{}",
        retrieve.text()
    );
    let create = http("POST", &workitems, &[], b"{}").unwrap();
    assert_eq!(create.status, 405, "{}", create.text());
    assert!(
        create.text().contains("POST is not served"),
        "{}",
        create.text()
    );
    assert!(create.header("allow").is_some_and(|a| a.contains("GET")));
}

// ---------------------------------------------------------------------------
// Direction A: a modality asks Pons for its worklist; Pons asks the origin's
// DICOMweb worklist (or UPS-RS workitems). Orthanc has neither, so the
// origin is scripts/worklist_origin.py.
// ---------------------------------------------------------------------------

/// (accession, name, modality, station AE, date, time, UPS state)
const ENTRIES: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
    (
        "ACC1",
        "Doe^Jane",
        "CT",
        "CT1",
        "20261203",
        "090000",
        "SCHEDULED",
    ),
    (
        "ACC2",
        "Roe^Rick",
        "MR",
        "MR1",
        "20261203",
        "140000",
        "SCHEDULED",
    ),
    (
        "ACC3",
        "Poe^Paul",
        "CT",
        "CT2",
        "20261205",
        "080000",
        "SCHEDULED",
    ),
    (
        "ACC4",
        "Müller^Jürgen",
        "CT",
        "CT1",
        "20261203",
        "160000",
        "SCHEDULED",
    ),
    (
        "ACC5",
        "Done^Don",
        "CT",
        "CT1",
        "20261203",
        "100000",
        "COMPLETED",
    ),
];

fn start_origin(mode: &str, dir: &Path) -> (ScriptPeer, String) {
    let entries: Vec<Value> = ENTRIES
        .iter()
        .enumerate()
        .map(|(i, (acc, name, modality, station, date, time, state))| {
            json!({
                "acc": acc, "pid": format!("P{i}"), "name": name,
                "study": format!("1.2.826.0.1.3680043.10.999.78.{i}"),
                "modality": modality, "station": station,
                "station_name": format!("Room {station}"),
                "date": date, "time": time, "sps_id": format!("SPS{i}"), "state": state,
            })
        })
        .collect();
    let file = dir.join("entries.json");
    std::fs::write(&file, serde_json::to_vec(&entries).unwrap()).unwrap();
    let port = free_port();
    let origin = ScriptPeer::start(
        "worklist_origin.py",
        &[&port.to_string(), mode, file.to_str().unwrap()],
    );
    (origin, format!("http://127.0.0.1:{port}/dicom-web"))
}

fn findscu_worklist(pons: &Pons, keys: &[&str]) -> FindResult {
    let keys: Vec<std::ffi::OsString> = keys.iter().map(Into::into).collect();
    let r = findscu_extract("PONS", pons.dimse_port(), &["-W"], &keys);
    assert!(
        r.log.is_empty() || !r.log.contains("E: "),
        "findscu failed: {}",
        r.log
    );
    r
}

fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .map(|e| e.to_str().unwrap().trim().to_owned())
        .unwrap_or_default()
}

fn first_item(
    obj: &dicom_object::InMemDicomObject,
    tag: dicom_core::Tag,
) -> dicom_object::InMemDicomObject {
    match obj.get(tag).map(|e| e.value()) {
        Some(dicom_core::value::Value::Sequence(s)) if !s.items().is_empty() => {
            s.items()[0].clone()
        }
        _ => panic!("no item in {tag}"),
    }
}

fn found_accessions(r: &FindResult) -> BTreeSet<String> {
    r.matches
        .iter()
        .map(|m| text(m, dicom_dictionary_std::tags::ACCESSION_NUMBER))
        .collect()
}

/// The modality's queries and the exact entries each must find, the same
/// whichever resource the origin has.
fn check_worklist_queries(pons: &Pons) {
    use dicom_core::value::Value as DicomValue;
    use dicom_dictionary_std::tags;
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let ct1_today = findscu_worklist(
        pons,
        &[
            "AccessionNumber",
            "PatientName",
            "ScheduledProcedureStepSequence[0].Modality=CT",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261203",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
            "ScheduledProcedureStepSequence[0].ScheduledStationName",
        ],
    );
    assert_eq!(
        found_accessions(&ct1_today),
        set(&["ACC1", "ACC4"]),
        "{}",
        ct1_today.log
    );
    for m in &ct1_today.matches {
        // Exactly the requested keys: two at the top, five in the step.
        assert!(m.get(tags::PATIENT_ID).is_none());
        let DicomValue::Sequence(steps) = m
            .get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            .unwrap()
            .value()
        else {
            panic!("no step sequence")
        };
        assert_eq!(steps.items().len(), 1);
        let step = &steps.items()[0];
        assert_eq!(step.iter().count(), 5);
        assert_eq!(text(step, tags::SCHEDULED_STATION_NAME), "Room CT1");
        if text(m, tags::ACCESSION_NUMBER) == "ACC4" {
            // UTF-8 from the origin, declared as such.
            assert_eq!(text(m, tags::PATIENT_NAME), "Müller^Jürgen");
            assert_eq!(text(m, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
            assert_eq!(
                text(step, tags::SCHEDULED_PROCEDURE_STEP_START_TIME),
                "160000"
            );
        }
    }
    let afternoon = findscu_worklist(
        pons,
        &[
            "AccessionNumber",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261203",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=1300-1700",
        ],
    );
    assert_eq!(found_accessions(&afternoon), set(&["ACC2", "ACC4"]));
    let later = findscu_worklist(
        pons,
        &[
            "AccessionNumber",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261204-20261206",
        ],
    );
    assert_eq!(found_accessions(&later), set(&["ACC3"]));
    let by_name = findscu_worklist(pons, &["AccessionNumber", "PatientName=R*"]);
    assert_eq!(found_accessions(&by_name), set(&["ACC2"]));
    // Sequence matching one level down: the step's protocol code, returned
    // with exactly the asked item key.
    let by_protocol = findscu_worklist(
        pons,
        &[
            "AccessionNumber",
            "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue=P-MR",
        ],
    );
    assert_eq!(found_accessions(&by_protocol), set(&["ACC2"]));
    let step = &first_item(
        &by_protocol.matches[0],
        tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    );
    let code = first_item(step, tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE);
    assert_eq!(text(&code, tags::CODE_VALUE), "P-MR");
    assert_eq!(code.iter().count(), 1, "only the asked item key");

    // pynetdicom, as a modality: its station's steps of the day.
    let out = script_command("mwl_client.py")
        .args(["127.0.0.1", &pons.dimse_port().to_string(), "PONS"])
        .args(["MR", "MR1", "20261203"])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["status"], 0, "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["accession"], "ACC2");
    assert_eq!(lines[0]["name"], "Roe^Rick");
    assert_eq!(lines[0]["time"], "140000");
    // Type 1 in a worklist: from the step, or made from the workitem's UID.
    assert!(
        !lines[0]["step_id"].as_str().unwrap().is_empty(),
        "{lines:?}"
    );
}

#[test]
fn a_modality_fetches_its_worklist_from_a_dicomweb_worklist() {
    let dir = tempfile::tempdir().unwrap();
    let (mut origin, url) = start_origin("mwl", dir.path());
    let pons = Pons::start(&PonsConfig::new(&url, dir.path()).to_toml());
    check_worklist_queries(&pons);
    std::thread::sleep(std::time::Duration::from_millis(300)); // the reader thread
    let asked = origin.lines_now();
    assert!(
        asked
            .iter()
            .all(|l| l.contains("/modality-scheduled-procedure-steps?")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|l| l.contains("ScheduledProcedureStepSequence.Modality=CT")),
        "{asked:?}"
    );
}

#[test]
fn a_modality_fetches_its_worklist_from_ups_rs_workitems() {
    let dir = tempfile::tempdir().unwrap();
    let (mut origin, url) = start_origin("ups", dir.path());
    let pons = Pons::start(&PonsConfig::new(&url, dir.path()).to_toml());
    check_worklist_queries(&pons);
    std::thread::sleep(std::time::Duration::from_millis(300)); // the reader thread
    let asked = origin.lines_now();
    // auto: the worklist service is asked once, then only workitems.
    assert_eq!(
        asked
            .iter()
            .filter(|l| l.contains("/modality-scheduled-procedure-steps"))
            .count(),
        1,
        "{asked:?}"
    );
    let first_ups = asked.iter().find(|l| l.contains("/workitems?")).unwrap();
    assert!(
        first_ups.contains("ProcedureStepState=SCHEDULED"),
        "{first_ups}"
    );
    assert!(
        first_ups.contains("ScheduledStationClassCodeSequence.CodeValue=CT"),
        "{first_ups}"
    );
    assert!(
        first_ups.contains("ScheduledStationNameCodeSequence.CodeValue=CT1"),
        "{first_ups}"
    );
    assert!(
        first_ups.contains("ScheduledProcedureStepStartDateTime=20261203000000-20261203235959"),
        "{first_ups}"
    );

    // worklist = "ups" asks workitems straight away.
    let dir2 = tempfile::tempdir().unwrap();
    let config = PonsConfig::new(&url, dir2.path()).to_toml().replacen(
        "[upstream]\n",
        "[upstream]\nworklist = \"ups\"\n",
        1,
    );
    let pons = Pons::start(&config);
    let r = findscu_worklist(&pons, &["AccessionNumber", "PatientName=Poe*"]);
    assert_eq!(found_accessions(&r), ["ACC3".to_owned()].into());
    std::thread::sleep(std::time::Duration::from_millis(300)); // the reader thread
    let asked = origin.lines_now();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|l| l.contains("/workitems?")), "{asked:?}");
}
