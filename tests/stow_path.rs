//! Direction B STOW-RS → C-STORE against real peers: dicomweb-client and a
//! streaming reqwest client post to Pons, Orthanc is the DIMSE PACS behind
//! it (its REST API only tells what it holds).

mod common;

use common::multipart::related_body;
use common::*;
use dicom_dictionary_std::tags;
use pons::dicom::part10::split_part10_header;
use pons::web::multipart::{new_boundary, related_content_type};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

const DICOM: &str = "application/dicom";

/// Orthanc as the PACS and Pons in front of it, answering at `{url}/studies`.
struct Setup {
    orthanc: Orthanc,
    pons: Pons,
    _state: tempfile::TempDir,
    url: String,
}

fn setup() -> Setup {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    let url = format!("{}/dicom-web", pons.web_url().unwrap());
    Setup {
        orthanc,
        pons,
        _state: state,
        url,
    }
}

fn study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    let study = obj.element(tags::STUDY_INSTANCE_UID).unwrap();
    study.to_str().unwrap().trim_end_matches('\0').to_owned()
}

/// The data set bytes of a PS3.10 file (everything after the meta group).
fn data_set(file: &[u8]) -> &[u8] {
    let (at, _) = split_part10_header(file).expect("a PS3.10 file");
    &file[at..]
}

/// Orthanc holds every one of `instances` with the very data set bytes sent.
fn assert_stored_byte_identical(orthanc: &Orthanc, instances: &[&Instance]) {
    let held = orthanc.instance_uids();
    for i in instances {
        assert!(held.contains(&i.sop_instance), "not stored: {i:?}");
        let original = std::fs::read(&i.path).unwrap();
        let stored = orthanc.instance_file(&i.sop_instance);
        let (a, b) = (data_set(&original), data_set(&stored));
        let at = a.iter().zip(b).position(|(x, y)| x != y);
        assert!(
            a == b,
            "data set of {} differs in Orthanc: {} vs {} bytes, first difference at {at:?}",
            i.path.display(),
            a.len(),
            b.len()
        );
    }
}

fn post(url: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    http("POST", url, &[("Content-Type", content_type)], body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

fn post_parts(url: &str, parts: &[(&str, Vec<u8>)]) -> HttpResponse {
    let b = "stow-test-boundary";
    post(
        url,
        &related_content_type(DICOM, b),
        &related_body(b, parts),
    )
}

/// SOP Instance UIDs (with their Failure Reason, for failures) of a sequence
/// of the response; items without a UID show as "".
fn items(response: &Value, tag: &str) -> Vec<(String, Option<u64>)> {
    response[tag]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let uid = i["00081155"]["Value"][0].as_str().unwrap_or("").to_owned();
                    (uid, i["00081197"]["Value"][0].as_u64())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn stored_uids(response: &Value) -> BTreeSet<String> {
    items(response, "00081199")
        .into_iter()
        .map(|(u, _)| u)
        .collect()
}

/// dicomweb-client's store_instances through scripts/stow_client.py.
fn dicomweb_client_store(url: &str, study: Option<&str>, files: &[PathBuf]) -> (u16, Value) {
    let mut cmd = script_command("stow_client.py");
    cmd.arg(url);
    if let Some(s) = study {
        cmd.arg("--study").arg(s);
    }
    let out = cmd.args(files).output().unwrap();
    assert!(
        out.status.success(),
        "stow_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["status"].as_u64().unwrap() as u16, v["response"].clone())
}

#[test]
fn dicomweb_client_stores_a_ct_series_and_every_sample() {
    let s = setup();
    let data = testdata();
    let ct = data.ct(200);
    let mut instances: Vec<&Instance> = ct.instances.iter().take(100).collect();
    instances.extend(data.samples.iter());
    let syntaxes: BTreeSet<&str> = instances
        .iter()
        .map(|i| i.transfer_syntax.as_str())
        .collect();
    assert!(
        syntaxes.len() >= 8,
        "too few transfer syntaxes: {syntaxes:?}"
    );
    let files: Vec<PathBuf> = instances.iter().map(|i| i.path.clone()).collect();

    let (status, response) = dicomweb_client_store(&s.url, None, &files);
    assert_eq!(status, 200, "{response:#}\n{}", s.pons.log());
    let sent: BTreeSet<String> = instances.iter().map(|i| i.sop_instance.clone()).collect();
    assert_eq!(stored_uids(&response), sent);
    assert!(response.get("00081198").is_none(), "{response:#}");
    // Each instance's Retrieve URL is its WADO-RS address under our base.
    let first = &response["00081199"]["Value"][0];
    let url = first["00081190"]["Value"][0].as_str().unwrap();
    let uid = first["00081155"]["Value"][0].as_str().unwrap();
    let inst = instances.iter().find(|i| i.sop_instance == uid).unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/studies/{}/series/",
            s.url,
            study_of(&inst.path)
        )) && url.ends_with(&format!("/instances/{uid}")),
        "{url}"
    );

    // Orthanc holds them all; pydicom re-encoded what it sent, so the
    // comparison is element by element.
    assert_eq!(s.orthanc.instance_uids(), sent);
    let pairs: Vec<(PathBuf, Vec<u8>)> = instances
        .iter()
        .map(|i| (i.path.clone(), s.orthanc.instance_file(&i.sop_instance)))
        .collect();
    if let Err(report) = compare_datasets(&pairs) {
        panic!("stored data sets differ:\n{report}");
    }
}

const EPILOGUE: u64 = 1 << 20;

/// Streams files as one multipart/related request with a Content-Length,
/// read from disk in 1 MiB chunks (a client faster than Pons, as curl is);
/// the status and the response body.
async fn stream_files(url: &str, files: &[PathBuf]) -> (u16, Value) {
    use futures::StreamExt;
    let boundary = new_boundary();
    let head_len = format!("--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n").len() as u64;
    let total: u64 = files
        .iter()
        .map(|f| head_len + f.metadata().unwrap().len() + 2)
        .sum::<u64>()
        + format!("--{boundary}--\r\n").len() as u64
        + EPILOGUE;
    let b = boundary.clone();
    let parts = futures::stream::iter(files.to_vec()).then(move |path| {
        let head = format!("--{b}\r\nContent-Type: {DICOM}\r\n\r\n");
        async move {
            let file = tokio::fs::File::open(path).await.unwrap();
            futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
                .chain(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
                .chain(futures::stream::once(async {
                    Ok(bytes::Bytes::from_static(b"\r\n"))
                }))
        }
    });
    let end = format!("--{boundary}--\r\n");
    // An epilogue (RFC 2046: text after the closing boundary, ignored), a
    // moment after the last part: the body has not ended when the parts
    // have. Pons must read it before it answers: a body left unread makes
    // the server close the connection, and a client still sending then
    // sees a reset instead of the answer.
    let epilogue_sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = epilogue_sent.clone();
    let epilogue = async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sent.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(bytes::Bytes::from(vec![b'.'; EPILOGUE as usize]))
    };
    let body = parts
        .flatten()
        .chain(futures::stream::once(async move {
            Ok::<_, std::io::Error>(end.into())
        }))
        .chain(futures::stream::once(epilogue));
    let rsp = reqwest::Client::new()
        .post(format!("{url}/studies"))
        .header("Content-Type", related_content_type(DICOM, &boundary))
        .header("Content-Length", total)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    assert!(
        epilogue_sent.load(std::sync::atomic::Ordering::SeqCst),
        "Pons answered before the body ended"
    );
    let body = rsp.bytes().await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, json)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_body_streams_through_in_bounded_memory() {
    let s = setup();
    let ct = testdata().ct(1000);
    let instances: Vec<&Instance> = ct.instances.iter().take(300).collect();
    let files: Vec<PathBuf> = instances.iter().map(|i| i.path.clone()).collect();
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(total > 150_000_000, "only {total} bytes");

    let (status, response) = stream_files(&s.url, &files).await;
    assert_eq!(status, 200, "{response:#}");
    assert_eq!(stored_uids(&response).len(), instances.len());
    let hwm_kb = vm_hwm_kb(s.pons.pid().unwrap());
    eprintln!("{total} bytes stored; Pons peak RSS {hwm_kb} kB");
    assert!(hwm_kb < 150 * 1024, "Pons peak RSS {hwm_kb} kB");
    assert_stored_byte_identical(&s.orthanc, &instances);
}

/// scripts/raw_store_scp.py: a PACS that keeps each data set's bytes
/// exactly as they came.
struct RawStoreScp {
    _peer: ScriptPeer,
    port: u16,
    dir: tempfile::TempDir,
}

impl RawStoreScp {
    fn start() -> RawStoreScp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let out = dir.path().to_str().unwrap();
        let _peer = ScriptPeer::start("raw_store_scp.py", &[&port.to_string(), out]);
        RawStoreScp { _peer, port, dir }
    }

    /// The data set bytes received for an instance.
    fn received(&self, sop_instance: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(format!("{sop_instance}.raw"))).ok()
    }
}

/// Request after request on fresh connections, each body read to its end
/// (see stream_files) and each answer whole.
#[tokio::test(flavor = "multi_thread")]
async fn answers_arrive_whole_request_after_request() {
    let scp = RawStoreScp::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("raw", "RAW", scp.port)];
    let pons = Pons::start(&cfg.to_toml());
    let url = format!("{}/dicom-web", pons.web_url().unwrap());
    let files = testdata().ct(1000).files(50);
    for round in 0..3 {
        let (status, response) = stream_files(&url, &files).await;
        assert_eq!(status, 200, "round {round}: {response:#}");
        assert_eq!(stored_uids(&response).len(), files.len(), "round {round}");
    }
}

/// Every sample (many SOP classes and transfer syntaxes, so Pons
/// re-associates on the way) reaches the PACS with the exact data set bytes
/// it had in its file.
#[tokio::test(flavor = "multi_thread")]
async fn every_sample_arrives_bit_for_bit() {
    let scp = RawStoreScp::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("raw", "RAW", scp.port)];
    let pons = Pons::start(&cfg.to_toml());
    let samples = &testdata().samples;
    let files: Vec<PathBuf> = samples.iter().map(|i| i.path.clone()).collect();
    let (status, response) =
        stream_files(&format!("{}/dicom-web", pons.web_url().unwrap()), &files).await;
    assert_eq!(status, 200, "{response:#}");
    for i in samples {
        let original = std::fs::read(&i.path).unwrap();
        let mut sent = data_set(&original).to_vec();
        // An odd-length deflate stream gets the one NUL of padding it lacks.
        if sent.len() % 2 == 1 && i.transfer_syntax == "1.2.840.10008.1.2.1.99" {
            sent.push(0);
        }
        let got = scp
            .received(&i.sop_instance)
            .unwrap_or_else(|| panic!("{} not received", i.path.display()));
        let at = got.iter().zip(&sent).position(|(x, y)| x != y);
        assert!(
            got == sent,
            "{} arrived changed: {} bytes sent, {} received, first difference at {at:?}",
            i.path.display(),
            sent.len(),
            got.len()
        );
    }
}

/// Peak resident set size of a process, from /proc.
fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/pid/status")
}

#[test]
fn a_mixed_batch_stores_the_good_and_names_the_bad() {
    let s = setup();
    let data = testdata();
    let ct = data.ct(200);
    let study = study_of(&ct.instances[0].path);
    let good: Vec<&Instance> = ct.instances.iter().take(6).collect();
    let read = |i: &Instance| std::fs::read(&i.path).unwrap();
    let other_study = &data.samples[0];
    assert_ne!(study_of(&other_study.path), study);
    // A slice cut short well past the lookahead: Pons sends most of it before
    // it can tell, and must not let the PACS keep it.
    let truncated = &ct.instances[10];
    let mut cut = read(truncated);
    cut.truncate(cut.len() - 1000);
    let parts = vec![
        (DICOM, read(good[0])),
        (DICOM, read(good[1])),
        (DICOM, read(other_study)),
        (DICOM, read(good[2])),
        (DICOM, b"this is not DICOM at all".repeat(50)),
        (DICOM, read(good[3])),
        (DICOM, cut),
        (DICOM, read(good[4])),
        (DICOM, read(good[5])),
    ];
    let rsp = post_parts(&format!("{}/studies/{study}", s.url), &parts);
    assert_eq!(rsp.status, 202, "{}\n{}", rsp.text(), s.pons.log());
    assert_eq!(rsp.header("content-type"), Some("application/dicom+json"));
    let response = rsp.json();
    let good_uids: BTreeSet<String> = good.iter().map(|i| i.sop_instance.clone()).collect();
    assert_eq!(stored_uids(&response), good_uids);
    let failed = items(&response, "00081198");
    assert_eq!(
        failed,
        vec![
            (other_study.sop_instance.clone(), Some(0xA901)),
            (String::new(), Some(0xC000)),
            (truncated.sop_instance.clone(), Some(0xC000)),
        ],
        "{response:#}"
    );
    assert_eq!(
        response["00081190"]["Value"][0],
        format!("{}/studies/{study}", s.url)
    );
    assert_eq!(s.orthanc.instance_uids(), good_uids);
    assert_stored_byte_identical(&s.orthanc, &good);
}

#[test]
fn nothing_of_the_study_is_a_conflict_and_nothing_is_sent() {
    let s = setup();
    let data = testdata();
    let files = data.ct(200).files(3);
    let elsewhere = "1.2.826.0.1.3680043.10.999.77";
    let (status, response) = dicomweb_client_store(&s.url, Some(elsewhere), &files);
    assert_eq!(status, 409, "{response:#}");
    let failed = items(&response, "00081198");
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|(_, r)| *r == Some(0xA901)), "{failed:?}");
    assert!(response.get("00081199").is_none());
    assert_eq!(s.orthanc.instance_count(), 0);
}

#[test]
fn bodies_we_cannot_store_are_refused_with_a_reason() {
    let s = setup();
    let url = format!("{}/studies", s.url);
    let one = std::fs::read(&testdata().ct(200).instances[0].path).unwrap();
    let b = "bnd";
    let dicom_body = related_body(b, &[(DICOM, one)]);

    let json = post(
        &url,
        "multipart/related; type=\"application/dicom+json\"; boundary=bnd",
        &related_body(b, &[("application/dicom+json", b"[{}]".to_vec())]),
    );
    assert_eq!(json.status, 415, "{}", json.text());
    assert!(
        json.text().contains("application/dicom+json"),
        "{}",
        json.text()
    );
    let plain = post(&url, "application/dicom", &dicom_body);
    assert_eq!(plain.status, 415, "{}", plain.text());
    let no_boundary = post(
        &url,
        "multipart/related; type=\"application/dicom\"",
        &dicom_body,
    );
    assert_eq!(no_boundary.status, 400, "{}", no_boundary.text());
    assert!(no_boundary.text().contains("boundary"));
    let bad_uid = post(
        &format!("{url}/not-a-uid"),
        &related_content_type(DICOM, b),
        &dicom_body,
    );
    assert_eq!(bad_uid.status, 400, "{}", bad_uid.text());
    let empty = post(
        &url,
        &related_content_type(DICOM, b),
        format!("--{b}--\r\n").as_bytes(),
    );
    assert_eq!(empty.status, 400, "{}", empty.text());
    // The unquoted type parameter curl users write is understood.
    let curl_style = post(
        &url,
        "multipart/related; type=application/dicom; boundary=bnd",
        &dicom_body,
    );
    assert_eq!(curl_style.status, 200, "{}", curl_style.text());
    assert_eq!(s.orthanc.instance_count(), 1);
}

#[test]
fn pacs_down_is_503_and_a_silent_pacs_is_504() {
    let state = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![
        PacsEntry::new("down", "DOWN", free_port()),
        PacsEntry::new("silent", "SILENT", silent.local_addr().unwrap().port()),
    ];
    // Appended keys land in the last [[pacs]] table: the silent one.
    let pons = Pons::start(&format!("{}timeout_secs = 2\n", cfg.to_toml()));
    let web = pons.web_url().unwrap();
    // Several MB: Pons answers after the first part's head, and must still
    // read the rest so that the client sees the answer, not a reset.
    let parts: Vec<(&str, Vec<u8>)> = testdata()
        .ct(200)
        .files(10)
        .iter()
        .map(|f| (DICOM, std::fs::read(f).unwrap()))
        .collect();

    let down = post_parts(&format!("{web}/dicom-web/studies"), &parts);
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.text().contains("PACS down"), "{}", down.text());

    // Accepts the TCP connection, never answers the A-ASSOCIATE-RQ.
    let holder = std::thread::spawn(move || silent.accept().map(|(sock, _)| sock));
    let slow = post_parts(&format!("{web}/pacs/silent/dicom-web/studies"), &parts);
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert!(slow.text().contains("PACS silent"), "{}", slow.text());
    drop(holder.join());
}
