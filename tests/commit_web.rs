//! Direction B storage commitment: a DICOMweb client POSTs to
//! `/commitment-requests/{uid}`, Pons asks the PACS with N-ACTION and answers
//! GET with the PACS's N-EVENT-REPORT. Orthanc's own storage commitment SCP
//! (it reports on a new association); a scripted pynetdicom SCP
//! (scripts/commit_scp.py) for a report on the same association and for a
//! report that arrives after Pons restarted.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const JSON: (&str, &str) = ("Content-Type", "application/dicom+json");

/// A flat request body: Referenced SOP Sequence of (class, instance).
fn body(refs: &[(String, String)]) -> Vec<u8> {
    let items: Vec<Value> = refs
        .iter()
        .map(|(c, i)| json!({"00081150": {"vr": "UI", "Value": [c]}, "00081155": {"vr": "UI", "Value": [i]}}))
        .collect();
    json!({"00081199": {"vr": "SQ", "Value": items}})
        .to_string()
        .into_bytes()
}

fn refs_of(instances: &[Instance]) -> Vec<(String, String)> {
    instances
        .iter()
        .map(|i| (i.sop_class.clone(), i.sop_instance.clone()))
        .collect()
}

/// (class, instance) of a result sequence; with the Failure Reason for failures.
fn items(result: &Value, tag: &str) -> BTreeSet<(String, String, Option<u64>)> {
    let Some(seq) = result[tag]["Value"].as_array() else {
        return BTreeSet::new();
    };
    seq.iter()
        .map(|i| {
            (
                i["00081150"]["Value"][0].as_str().unwrap().to_owned(),
                i["00081155"]["Value"][0].as_str().unwrap().to_owned(),
                i["00081197"]["Value"][0].as_u64(),
            )
        })
        .collect()
}

fn post(url: &str, refs: &[(String, String)]) -> HttpResponse {
    http("POST", url, &[JSON], &body(refs)).unwrap()
}

/// GET until the result is there (200) or anything but 202 comes.
fn result(url: &str) -> HttpResponse {
    let mut last = None;
    wait_until(Duration::from_secs(60), || {
        let rsp = http("GET", url, &[], b"").unwrap();
        let done = rsp.status != 202;
        last = Some(rsp);
        done
    });
    last.unwrap()
}

/// The result must be: `present` committed, `missing` failed with 0112.
fn assert_result(rsp: &HttpResponse, present: &[(String, String)], missing: &[(String, String)]) {
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.header("content-type"), Some("application/dicom+json"));
    let v = rsp.json();
    let committed: BTreeSet<_> = present
        .iter()
        .map(|(c, i)| (c.clone(), i.clone(), None))
        .collect();
    let failed: BTreeSet<_> = missing
        .iter()
        .map(|(c, i)| (c.clone(), i.clone(), Some(0x0112)))
        .collect();
    assert_eq!(items(&v, "00081199"), committed, "{v}");
    assert_eq!(items(&v, "00081198"), failed, "{v}");
}

fn missing(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (CT.to_owned(), format!("1.2.826.0.1.3680043.10.1055.77.{i}")))
        .collect()
}

#[test]
fn orthanc_commits_what_it_holds_and_reports_on_a_new_association() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    let orthanc = Orthanc::start_with_modalities(&[Modality::new("PONS", cfg.dimse_port)]);
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let toml = cfg
        .to_toml()
        .replace("[web]\n", "[web]\ncommitment_retention_secs = 6\n");
    let pons = Pons::start(&toml);
    let base = format!("{}/dicom-web", pons.web_url().unwrap());

    let ct = testdata().ct(200);
    let stored = &ct.instances[..10];
    let files: Vec<_> = stored.iter().map(|i| i.path.clone()).collect();
    storescu("PONS", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    let present = refs_of(stored);
    let absent = missing(2);
    let all: Vec<_> = present.iter().chain(&absent).cloned().collect();

    let url = format!("{base}/commitment-requests/1.2.826.0.1.3680043.10.1055.70");
    let first = post(&url, &all);
    assert!(
        first.status == 200 || first.status == 202,
        "{} {}",
        first.status,
        first.text()
    );
    if first.status == 202 {
        assert_eq!(first.header("retry-after"), Some("2"));
        assert_eq!(first.header("content-location"), Some(url.as_str()));
    }
    let rsp = result(&url);
    assert_result(&rsp, &present, &absent);
    assert!(pons.log().contains("\"new association\""), "{}", pons.log());

    // The Transaction UID is used: 409, whatever the body.
    let again = post(&url, &present);
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.text().contains("already used"), "{}", again.text());

    // Bad requests say what is wrong.
    let bad_uid = format!("{base}/commitment-requests/not-a-uid");
    for (u, headers, body, code, needle) in [
        (&bad_uid, vec![JSON], self::body(&present), 400, "not-a-uid"),
        (&url, vec![JSON], b"{".to_vec(), 400, "not JSON"),
        (
            &url,
            vec![JSON],
            b"{\"00081199\": {\"vr\": \"SQ\", \"Value\": []}}".to_vec(),
            400,
            "",
        ),
        (
            &url,
            vec![("Content-Type", "application/xml")],
            b"<x/>".to_vec(),
            415,
            "application/dicom+json",
        ),
    ] {
        let rsp = http("POST", u, &headers, &body).unwrap();
        assert_eq!(rsp.status, code, "{u}: {}", rsp.text());
        assert!(rsp.text().contains(needle), "{}", rsp.text());
    }
    let unknown = http(
        "GET",
        &format!("{base}/commitment-requests/1.2.3.4.5"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // Past the retention, the result is gone.
    std::thread::sleep(Duration::from_secs(7));
    let gone = http("GET", &url, &[], b"").unwrap();
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert!(gone.text().contains("expired"), "{}", gone.text());
}

/// scripts/commit_scp.py as the PACS behind a Pons it knows as a peer (to
/// report to on a new association). Each report it sends, it prints as
/// {"via", "status"}: read them with `next_json`.
fn scripted_setup(state: &std::path::Path, args: &[&str]) -> (ScriptPeer, Pons, String) {
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state);
    let peer = format!("PONS@127.0.0.1:{}", cfg.dimse_port);
    let port = free_port();
    let port_arg = port.to_string();
    let mut all = vec![port_arg.as_str(), "--peer", peer.as_str()];
    all.extend_from_slice(args);
    let pacs = ScriptPeer::start("commit_scp.py", &all);
    cfg.pacs = vec![PacsEntry::new("fake", "FAKEPACS", port)];
    let pons = Pons::start(&cfg.to_toml());
    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    (pacs, pons, base)
}

#[test]
fn a_report_on_the_n_action_association_is_taken() {
    let state = tempfile::tempdir().unwrap();
    let absent = missing(1);
    let (mut pacs, pons, base) = scripted_setup(
        state.path(),
        &["--report", "same", "--missing", &absent[0].1],
    );
    let present = refs_of(&testdata().ct(200).instances[20..25]);
    let all: Vec<_> = present.iter().chain(&absent).cloned().collect();
    let url = format!("{base}/commitment-requests/1.2.826.0.1.3680043.10.1055.71");
    let first = post(&url, &all);
    assert!(
        first.status == 200 || first.status == 202,
        "{}",
        first.text()
    );
    assert_result(&result(&url), &present, &absent);
    assert_eq!(pacs.next_json(), json!({"via": "same", "status": 0}));
    assert!(
        pons.log().contains("\"same association\""),
        "{}",
        pons.log()
    );
}

#[test]
fn a_report_after_a_restart_of_pons_is_taken() {
    let state = tempfile::tempdir().unwrap();
    let (mut pacs, mut pons, base) =
        scripted_setup(state.path(), &["--report", "new", "--delay", "4"]);
    let present = refs_of(&testdata().ct(200).instances[30..40]);
    let url = format!("{base}/commitment-requests/1.2.826.0.1.3680043.10.1055.72");
    let first = post(&url, &present);
    assert_eq!(first.status, 202, "{}", first.text());
    // Pons dies while the PACS is working; a new process takes its report.
    pons.kill9();
    pons.restart();
    assert_eq!(pacs.next_json(), json!({"via": "new", "status": 0}));
    assert_result(&result(&url), &present, &[]);
}
