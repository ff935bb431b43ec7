//! Direction A C-FIND against real peers: DCMTK findscu → Pons → QIDO-RS on
//! Orthanc's DICOMweb, with a small archive whose contents the test knows.

mod common;

use common::archive::*;
use common::*;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

struct Setup {
    orthanc: Orthanc,
    pons: Pons,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(extra_toml: &str) -> Setup {
    let orthanc = Orthanc::start();
    let data = tempfile::tempdir().unwrap();
    load_archive(&orthanc, data.path());
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let toml = cfg.to_toml();
    // Extra keys go into their tables.
    let toml = if extra_toml.is_empty() {
        toml
    } else {
        merge(&toml, extra_toml)
    };
    let pons = Pons::start(&toml);
    Setup {
        orthanc,
        pons,
        _dirs: (data, state),
    }
}

/// Insert `key = value` lines after their `[table]` header.
fn merge(toml: &str, extra: &str) -> String {
    let mut out = toml.to_owned();
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let (table, kv) = line.split_once(' ').unwrap();
        out = out.replacen(&format!("{table}\n"), &format!("{table}\n{kv}\n"), 1);
    }
    out
}

fn findscu(pons: &Pons, model: &str, keys: &[&str], extra: &[&str]) -> FindResult {
    let keys: Vec<OsString> = keys.iter().map(OsString::from).collect();
    findscu_raw(pons, model, &keys, extra)
}

/// Keys as raw bytes, for values in a character set other than the shell's.
fn findscu_raw(pons: &Pons, model: &str, keys: &[OsString], extra: &[&str]) -> FindResult {
    let mut args = vec!["-v", "-d", model];
    args.extend_from_slice(extra);
    findscu_extract("PONS", pons.dimse_port(), &args, keys)
}

fn values(r: &FindResult, tag: Tag) -> BTreeSet<String> {
    r.matches
        .iter()
        .map(|m| {
            m.get(tag)
                .map(|e| e.to_str().unwrap().trim().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn uids_of(suffixes: &[&str]) -> BTreeSet<String> {
    suffixes.iter().map(|s| uid(s)).collect()
}

fn final_status(r: &FindResult) -> String {
    // findscu -d prints each response's DIMSE Status; the last one is final.
    r.log
        .lines()
        .rfind(|l| l.contains("DIMSE Status"))
        .unwrap_or_else(|| panic!("no status in:\n{}", r.log))
        .to_owned()
}

#[test]
fn c_find_matches_exactly_what_the_archive_holds() {
    let s = setup("");
    let study = |keys: &[&str]| {
        let mut k = vec!["QueryRetrieveLevel=STUDY", "StudyInstanceUID"];
        k.extend_from_slice(keys);
        findscu(&s.pons, "-S", &k, &[])
    };

    let r = study(&["PatientID=PA1"]);
    assert!(final_status(&r).contains("0x0000"), "{}", r.log);
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        uids_of(&["1.1", "1.2"])
    );

    // Wildcards.
    assert_eq!(
        values(&study(&["PatientName=DOE*"]), tags::STUDY_INSTANCE_UID),
        uids_of(&["1.1", "1.2"])
    );
    assert_eq!(
        values(&study(&["PatientName=?OE^*"]), tags::STUDY_INSTANCE_UID),
        uids_of(&["1.1", "1.2", "3.1"])
    );
    // Date ranges, both open and closed.
    assert_eq!(
        values(
            &study(&["StudyDate=20200101-20211231"]),
            tags::STUDY_INSTANCE_UID
        ),
        uids_of(&["1.1", "1.2"])
    );
    assert_eq!(
        values(&study(&["StudyDate=20220101-"]), tags::STUDY_INSTANCE_UID),
        uids_of(&["2.1", "3.1"])
    );
    assert_eq!(
        values(&study(&["StudyDate=-20200105"]), tags::STUDY_INSTANCE_UID),
        uids_of(&["1.1"])
    );
    // List of UIDs.
    let list = format!("StudyInstanceUID={}\\{}", uid("1.2"), uid("3.1"));
    let r = findscu(&s.pons, "-S", &["QueryRetrieveLevel=STUDY", &list], &[]);
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        uids_of(&["1.2", "3.1"])
    );
    // No match is success with nothing.
    let r = study(&["PatientID=NOBODY"]);
    assert!(r.matches.is_empty());
    assert!(final_status(&r).contains("0x0000"), "{}", r.log);

    // The response carries exactly the requested keys, the level and our AE.
    let r = study(&["PatientID=PC3", "AccessionNumber", "StudyDate"]);
    assert_eq!(r.matches.len(), 1);
    let keys: BTreeSet<Tag> = r.matches[0].iter().map(|e| e.header().tag).collect();
    let expected: BTreeSet<Tag> = [
        tags::QUERY_RETRIEVE_LEVEL,
        tags::RETRIEVE_AE_TITLE,
        tags::STUDY_INSTANCE_UID,
        tags::PATIENT_ID,
        tags::ACCESSION_NUMBER,
        tags::STUDY_DATE,
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(
        values(&r, tags::ACCESSION_NUMBER),
        ["ACC3.1".to_owned()].into()
    );
    assert_eq!(
        values(&r, tags::RETRIEVE_AE_TITLE),
        ["PONS".to_owned()].into()
    );
}

#[test]
fn c_find_at_every_level_and_both_models() {
    let s = setup("");
    let series = format!("StudyInstanceUID={}", uid("1.1"));
    let r = findscu(
        &s.pons,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &series,
            "SeriesInstanceUID",
            "Modality",
        ],
        &[],
    );
    assert_eq!(
        values(&r, tags::SERIES_INSTANCE_UID),
        uids_of(&["1.1.1", "1.1.2"])
    );
    assert_eq!(
        values(&r, tags::MODALITY),
        ["CT".to_owned(), "MR".to_owned()].into()
    );

    let r = findscu(
        &s.pons,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            "Modality=MR",
            "SeriesInstanceUID",
        ],
        &[],
    );
    assert_eq!(
        values(&r, tags::SERIES_INSTANCE_UID),
        uids_of(&["1.1.2", "3.1.1"])
    );

    let image_series = format!("SeriesInstanceUID={}", uid("3.1.1"));
    let image_study = format!("StudyInstanceUID={}", uid("3.1"));
    let r = findscu(
        &s.pons,
        "-P",
        &[
            "QueryRetrieveLevel=IMAGE",
            "PatientID=PC3",
            &image_study,
            &image_series,
            "SOPInstanceUID",
        ],
        &[],
    );
    assert_eq!(
        values(&r, tags::SOP_INSTANCE_UID),
        uids_of(&["3.1.1.1", "3.1.1.2", "3.1.1.3"])
    );

    // PATIENT level (Patient Root): one answer per patient.
    let r = findscu(
        &s.pons,
        "-P",
        &["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
        &[],
    );
    assert_eq!(
        values(&r, tags::PATIENT_ID),
        ["PA1", "PB2", "PC3"].map(String::from).into()
    );

    // PATIENT level is not in the Study Root model.
    let r = findscu(
        &s.pons,
        "-S",
        &["QueryRetrieveLevel=PATIENT", "PatientID"],
        &[],
    );
    assert!(r.matches.is_empty());
    assert!(final_status(&r).contains("0xa900"), "{}", r.log);
}

#[test]
fn c_find_matches_a_non_ascii_name() {
    let s = setup("");
    let r = findscu(
        &s.pons,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName=Müller^Jürgen",
            "StudyInstanceUID",
        ],
        &[],
    );
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        uids_of(&["2.1"]),
        "{}",
        r.log
    );
    assert_eq!(
        values(&r, tags::PATIENT_NAME),
        ["Müller^Jürgen".to_owned()].into()
    );
    assert_eq!(
        values(&r, tags::SPECIFIC_CHARACTER_SET),
        ["ISO_IR 192".to_owned()].into()
    );
}

#[test]
fn c_find_decodes_a_latin1_request() {
    let s = setup("");
    // "Müller^Jürgen" in ISO 8859-1: ü is the single byte 0xFC.
    let name = OsString::from_vec(b"PatientName=M\xfcller^J\xfcrgen".to_vec());
    let keys = [
        OsString::from("QueryRetrieveLevel=STUDY"),
        OsString::from("SpecificCharacterSet=ISO_IR 100"),
        name,
        OsString::from("StudyInstanceUID"),
    ];
    let r = findscu_raw(&s.pons, "-S", &keys, &[]);
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        uids_of(&["2.1"]),
        "{}",
        r.log
    );
}

#[test]
fn c_find_never_truncates() {
    let s = setup("[dimse] find_max_results = 3\n[upstream] qido_page_size = 1");
    // Four studies, three allowed: A700 with a comment, after exactly three matches.
    let r = findscu(
        &s.pons,
        "-S",
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        &[],
    );
    assert_eq!(r.matches.len(), 3);
    assert!(final_status(&r).contains("0xa700"), "{}", r.log);
    assert!(r.log.contains("narrow the query"), "{}", r.log);
    // Paging of one per request still finds everything below the maximum.
    let r = findscu(
        &s.pons,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=PA1",
            "StudyInstanceUID",
        ],
        &[],
    );
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        uids_of(&["1.1", "1.2"])
    );
    assert!(final_status(&r).contains("0x0000"), "{}", r.log);
}

/// A scripted origin on a free port: each request's head (up to its empty
/// line) goes to `answer`, which returns the whole response to send.
fn scripted_origin(answer: impl Fn(&str) -> String + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).unwrap_or(0) > 2 {}
            let _ = conn.write_all(answer(&head).as_bytes());
        }
    });
    port
}

/// A QIDO-RS origin with five studies, one per page, on a free port. It
/// answers the first page at once and holds every later one until
/// `release()` is true. Returns the port and the offsets asked for.
fn held_origin(release: impl Fn() -> bool + Send + 'static) -> (u16, Arc<Mutex<Vec<usize>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let port = scripted_origin(move |head| {
        let offset: usize = head
            .split(['?', '&', ' '])
            .find_map(|p| p.strip_prefix("offset="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        seen.lock().unwrap().push(offset);
        if offset > 0 {
            assert!(
                wait_until(Duration::from_secs(60), &release),
                "never released"
            );
        }
        let body = if offset < 5 {
            format!(
                "[{{\"0020000D\":{{\"vr\":\"UI\",\"Value\":[\"1.2.826.0.1.3680043.10.997.{}\"]}}}}]",
                offset + 1
            )
        } else {
            "[]".to_owned()
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    });
    (port, asked)
}

#[test]
fn c_find_can_be_cancelled() {
    // The origin holds the second page until Pons has taken the C-CANCEL
    // that findscu sends after the first match, so the cancel always
    // arrives mid-search, never after the search ended by itself (with
    // Orthanc, all four studies could be sent before the cancel came).
    let log_path = Arc::new(OnceLock::<PathBuf>::new());
    let log = log_path.clone();
    let (port, asked) = held_origin(move || {
        let cancelled = log.get().is_some_and(|p| {
            std::fs::read_to_string(p).is_ok_and(|l| l.contains("C-CANCEL received"))
        });
        if cancelled {
            // The token is set just after that line is logged.
            std::thread::sleep(Duration::from_millis(100));
        }
        cancelled
    });
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&format!("http://127.0.0.1:{port}/dicom-web"), state.path());
    let pons = Pons::start(&merge(&cfg.to_toml(), "[upstream] qido_page_size = 1"));
    log_path.set(pons.log_path().to_owned()).unwrap();

    let r = findscu(
        &pons,
        "-S",
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        &["--cancel", "1"],
    );
    assert!(final_status(&r).contains("0xfe00"), "{}", r.log);
    // Only the match before the cancel.
    assert_eq!(r.matches.len(), 1, "{}", r.log);
    assert_eq!(
        values(&r, tags::STUDY_INSTANCE_UID),
        ["1.2.826.0.1.3680043.10.997.1".to_owned()].into()
    );
    // The search stopped there: the cancel came before Pons asked for the
    // second page or while it waited for it, and no page after.
    let asked = asked.lock().unwrap().clone();
    assert!(matches!(asked[..], [0] | [0, 1]), "{asked:?}");
}

#[test]
fn c_find_with_the_archive_down_fails_with_a_comment() {
    let mut s = setup("");
    s.orthanc.stop();
    let r = findscu(
        &s.pons,
        "-S",
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        &[],
    );
    assert!(r.matches.is_empty());
    assert!(final_status(&r).contains("0xc000"), "{}", r.log);
    assert!(r.log.contains("archive unreachable"), "{}", r.log);
}

/// An origin that answers every request with `status` and Retry-After.
fn overloaded_origin(status: u16) -> u16 {
    scripted_origin(move |_| {
        format!(
            "HTTP/1.1 {status} Busy\r\nRetry-After: 30\r\nContent-Length: 5\r\n\
             Connection: close\r\n\r\nbusy\n"
        )
    })
}

#[test]
fn c_find_on_an_overloaded_archive_is_out_of_resources_at_once() {
    for status in [429, 503] {
        let port = overloaded_origin(status);
        let state = tempfile::tempdir().unwrap();
        let cfg = PonsConfig::new(&format!("http://127.0.0.1:{port}/dicom-web"), state.path());
        let pons = Pons::start(&cfg.to_toml());
        let start = std::time::Instant::now();
        let r = findscu(
            &pons,
            "-S",
            &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            &[],
        );
        assert!(r.matches.is_empty());
        assert!(final_status(&r).contains("0xa700"), "{status}: {}", r.log);
        let comment = format!("archive answered HTTP {status}; retry later");
        assert!(r.log.contains(&comment), "{}", r.log);
        // Not after waiting out its Retry-After.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}
