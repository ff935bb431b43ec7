//! Faults survived without loss: what was acknowledged is never lost, and
//! what was not is refused with a clear status.

mod common;

use common::multipart::{dicom_body, find};
use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A small tmpfs, unmounted on drop (the tests run as root, as CI does).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// storescu -v of each file on its own association, so that every file
/// gets its own answer: (stored, refused) file lists and the whole log.
fn store_each(port: u16, files: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>, String) {
    let (mut stored, mut refused, mut log) = (Vec::new(), Vec::new(), String::new());
    for f in files {
        let out = storescu("MODALITY", "PONS", port, &[f], &["-v", "-d"]);
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains(": 0x0000: Success") {
            stored.push(f.clone());
        } else {
            refused.push(f.clone());
        }
        log.push_str(&text);
    }
    (stored, refused, log)
}

fn sop_uids(files: &[PathBuf]) -> BTreeSet<String> {
    files.iter().map(|f| file_uids(f).2).collect()
}

#[test]
fn a_full_spool_disk_refuses_with_a700_and_storing_resumes_once_space_is_freed() {
    let mut orthanc = Orthanc::start();
    orthanc.stop(); // nothing drains until it is back
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    // Room for about five 0.5 MB instances.
    let _disk = SmallDisk::mount(&cfg.spool_dir, "3m");
    let pons = Pons::start(&set_numbers(
        &cfg.to_toml(),
        "spool",
        &[("retry_max_secs", 2)],
    ));
    let files = testdata().ct(100).files(10);

    let (stored, refused, log) = store_each(pons.dimse_port(), &files);
    assert!(!stored.is_empty() && !refused.is_empty(), "{log}");
    assert!(log.contains("0xa700: Refused: Out of resources"), "{log}");
    assert!(log.contains("out of spool space"), "{log}");
    // Exactly the acknowledged instances are spooled; no half file is left.
    assert_eq!(files_in(&cfg.spool_dir.join("ready")), stored.len());
    assert_eq!(files_in(&cfg.spool_dir.join("incoming")), 0);

    // The archive is back: the spool drains, and the rest can be stored.
    orthanc.restart();
    assert!(
        wait_until(Duration::from_secs(60), || orthanc.instance_uids()
            == sop_uids(&stored)),
        "spooled instances were not delivered"
    );
    let (again, still_refused, log) = store_each(pons.dimse_port(), &refused);
    assert!(still_refused.is_empty(), "{log}");
    assert_eq!(again.len(), refused.len());
    assert!(
        wait_until(Duration::from_secs(60), || orthanc.instance_uids()
            == sop_uids(&files)),
        "not every instance arrived"
    );
}

fn readyz(pons: &Pons) -> serde_json::Value {
    let url = format!("{}/readyz", pons.web_url().unwrap());
    http("GET", &url, &[], b"").unwrap().json()
}

#[test]
fn a_locked_job_table_refuses_stores_and_readyz_says_why() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(100).files(2);
    assert_eq!(readyz(&pons)["jobs"], "ok");

    // Another process holds the database's write lock.
    let db = state.path().join("jobs.db");
    let mut locker = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n",
        )
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 7];
    locker
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"locked\n");

    let ready = readyz(&pons);
    let jobs = ready["jobs"].as_str().unwrap_or_default().to_owned();
    assert!(jobs.contains("cannot be written"), "{ready}");
    assert_eq!(ready["ready"], false);
    let (stored, _, log) = store_each(pons.dimse_port(), &files[..1]);
    assert!(stored.is_empty(), "{log}");
    assert!(log.contains("job table"), "{log}");
    assert_eq!(files_in(&cfg.spool_dir.join("ready")), 0);

    // Lock released: ready again, and stores are taken and delivered.
    drop(locker.stdin.take());
    let _ = locker.wait();
    assert!(wait_until(Duration::from_secs(10), || readyz(&pons)
        ["ready"]
        == true));
    let (stored, _, log) = store_each(pons.dimse_port(), &files);
    assert_eq!(stored.len(), 2, "{log}");
    assert!(wait_until(Duration::from_secs(60), || orthanc
        .instance_uids()
        == sop_uids(&files)));
}

#[test]
fn an_origin_answering_a_byte_a_second_times_out_and_the_spool_retries() {
    let orthanc = Orthanc::start();
    let relay_port = free_port();
    let mut relay = ScriptPeer::start(
        "faulty_relay.py",
        &[
            &relay_port.to_string(),
            &orthanc.http_port().to_string(),
            "slow",
            "1",
        ],
    );
    let state = tempfile::tempdir().unwrap();
    let url = orthanc.dicomweb_url().replace(
        &format!(":{}/", orthanc.http_port()),
        &format!(":{relay_port}/"),
    );
    let cfg = PonsConfig::new(&url, state.path());
    let config = set_numbers(&cfg.to_toml(), "upstream", &[("request_timeout_secs", 3)]);
    let pons = Pons::start(&set_numbers(&config, "spool", &[("retry_max_secs", 2)]));
    let files = testdata().ct(100).files(3);
    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    assert_eq!(relay.next_line(), "faulted");
    // The slow answer is given up on, and the job sent again.
    let settled = || pons.log().matches("STOW-RS batch settled").count();
    assert!(
        wait_until(Duration::from_secs(60), || settled() == 3),
        "{}",
        pons.log()
    );
    let log = pons.log();
    assert!(log.contains("STOW-RS failed; will retry"), "{log}");
    assert!(log.contains("within 3 s"), "{log}");
    assert_eq!(orthanc.instance_uids(), sop_uids(&files));
}

/// Orthanc as the PACS behind a relay that aborts the first association
/// that has carried more than 1 MB, and Pons in front (C-GET).
#[test]
fn a_pacs_aborting_mid_retrieve_gives_a_truncated_answer_and_a_retry_works() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/unused", state.path());
    let orthanc = Orthanc::start_with_modalities(&[Modality::new(&cfg.ae_title, cfg.dimse_port)]);
    let files = testdata().ct(100).files(8);
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(8, Duration::from_secs(60)), 8);
    let relay_port = free_port();
    let mut relay = ScriptPeer::start(
        "faulty_relay.py",
        &[
            &relay_port.to_string(),
            &orthanc.dicom_port().to_string(),
            "abort",
            "1000000",
            "1",
        ],
    );
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), relay_port)];
    let pons = Pons::start(&cfg.to_toml());
    let (study, series, _, _) = file_uids(&files[0]);
    let path = format!("/dicom-web/studies/{study}/series/{series}");

    let (head, body) = raw_get(cfg.web_port, &path);
    assert_eq!(relay.next_line(), "faulted");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let boundary = boundary_of(&head);
    // Cut off: no closing delimiter, no last chunk; a client can tell.
    assert!(find(&body, format!("--{boundary}--").as_bytes(), 0).is_none());
    assert!(!body.ends_with(b"0\r\n\r\n"));

    let (head, body) = raw_get(cfg.web_port, &path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let closing = format!("--{}--", boundary_of(&head));
    assert!(find(&body, closing.as_bytes(), 0).is_some());
    assert!(body.ends_with(b"0\r\n\r\n"));
    let parts = find_all(&body, b"Content-Type: application/dicom");
    assert_eq!(parts, 8, "{}", pons.log());
}

fn boundary_of(head: &str) -> String {
    head.split("boundary=")
        .nth(1)
        .map(|b| {
            b.split([';', '\r'])
                .next()
                .unwrap()
                .trim_matches('"')
                .to_owned()
        })
        .expect("a boundary")
}

fn find_all(hay: &[u8], needle: &[u8]) -> usize {
    let (mut n, mut at) = (0, 0);
    while let Some(i) = find(hay, needle, at) {
        n += 1;
        at = i + needle.len();
    }
    n
}

/// GET over a raw connection: the head, and the body as sent on the wire
/// (chunked framing included), read until the server closes.
fn raw_get(port: u16, path: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: pons\r\nAccept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = find(&all, b"\r\n\r\n", 0).expect("a head");
    (
        String::from_utf8_lossy(&all[..end + 2]).into_owned(),
        all[end + 4..].to_vec(),
    )
}

/// SOP Instance UIDs of storescp's files (named `CT.<uid>`).
fn received_uids(scp: &StoreScp) -> BTreeSet<String> {
    scp.files()
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .split_once('.')
                .map(|(_, u)| u.to_owned())
        })
        .collect()
}

fn running_jobs(pons: &Pons) -> Vec<serde_json::Value> {
    let url = format!("{}/jobs?state=running", pons.web_url().unwrap());
    let rsp = http("GET", &url, &[], b"").unwrap();
    rsp.json()["jobs"].as_array().cloned().unwrap_or_default()
}

/// SIGKILL in the middle of a C-MOVE (direction A) and of a STOW-RS
/// (direction B): neither was acknowledged, so nothing is owed; after a
/// restart no job is left running and both, asked again, complete.
/// (SIGKILL during spooled C-STOREs and during storage commitment:
/// store_path, commit_path and commit_web.)
#[test]
fn sigkill_mid_move_and_mid_stow_leaves_no_stuck_job_and_both_complete_after() {
    let orthanc = Orthanc::start();
    let moved = testdata().ct(100).files(100);
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &moved, &[]).assert_success();
    assert_eq!(
        orthanc.wait_for_instances(100, Duration::from_secs(60)),
        100
    );
    let scp = StoreScp::start("STORESCP");
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.known_aes = vec![scp.known_ae()];
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let mut pons = Pons::start(&cfg.to_toml());
    let study = format!("StudyInstanceUID={}", file_uids(&moved[0]).0);
    // True when the move reported success.
    let movescu = move |port: u16, study: String| {
        let out = dcmtk("movescu")
            .args([
                "-v", "-S", "-aet", "MODALITY", "-aec", "PONS", "-aem", "STORESCP",
            ])
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &study])
            .args(["127.0.0.1", &port.to_string()])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        log.contains("Final Move Response (Success)")
    };

    let port = pons.dimse_port();
    let first = std::thread::spawn({
        let study = study.clone();
        move || movescu(port, study)
    });
    assert!(wait_until(Duration::from_secs(30), || !scp
        .files()
        .is_empty()));
    pons.kill9();
    let first_ok = first.join().unwrap();
    assert!(!first_ok, "the move finished before the kill");
    pons.restart();
    assert!(running_jobs(&pons).is_empty(), "{:?}", running_jobs(&pons));
    assert!(movescu(port, study));
    assert_eq!(received_uids(&scp), sop_uids(&moved));

    // A STOW-RS cut off by the kill after 10 of its 30 parts.
    let stowed = testdata().ct(200).files(130)[100..].to_vec();
    let parts: Vec<Vec<u8>> = stowed.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let body = dicom_body("k", &parts);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", cfg.web_port)).unwrap();
    write!(
        s,
        "POST /dicom-web/studies HTTP/1.1\r\nHost: pons\r\nContent-Type: multipart/related; \
         type=\"application/dicom\"; boundary=k\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let tenth = body.len() / 3;
    s.write_all(&body[..tenth]).unwrap();
    assert!(wait_until(Duration::from_secs(30), || orthanc
        .instance_count()
        > 100));
    pons.kill9();
    let _ = s.write_all(&body[tenth..]);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains(" 200 "));
    pons.restart();
    assert!(running_jobs(&pons).is_empty());
    let rsp = http(
        "POST",
        &format!("{}/dicom-web/studies", pons.web_url().unwrap()),
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=k",
        )],
        &body,
    )
    .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let all: BTreeSet<String> = sop_uids(&moved)
        .union(&sop_uids(&stowed))
        .cloned()
        .collect();
    assert_eq!(orthanc.instance_uids(), all);
}
