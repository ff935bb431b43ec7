//! Direction B WADO-RS against real peers: dicomweb-client and raw HTTP →
//! Pons → C-GET (or C-MOVE to Pons's own AE) → Orthanc as the DIMSE PACS.
//! Orthanc's REST API only tells what it holds (and how it converts).

mod common;

use common::multipart::{find, parts, Part};
use common::*;
use pons::dicom::part10::split_part10_header;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ELE: &str = "1.2.840.10008.1.2.1";
const ILE: &str = "1.2.840.10008.1.2";
const EBE: &str = "1.2.840.10008.1.2.2";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const J2K: [&str; 2] = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"];

struct Setup {
    orthanc: Orthanc,
    pons: Pons,
    web: String,
    _state: tempfile::TempDir,
}

/// Orthanc (knowing Pons's AE for C-MOVE) loaded with `files`, and Pons in
/// front of it retrieving with `mode`.
fn setup(mode: &str, files: &[PathBuf]) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/unused", state.path());
    let orthanc = Orthanc::start_with_modalities(&[Modality::new(&cfg.ae_title, cfg.dimse_port)]);
    cfg.upstream_url = orthanc.dicomweb_url();
    let mut pacs = PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port());
    pacs.retrieve = mode.to_owned();
    cfg.pacs = vec![pacs];
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), files, &[]).assert_success();
    assert_eq!(
        orthanc.wait_for_instances(files.len(), Duration::from_secs(60)),
        files.len()
    );
    let pons = Pons::start(&cfg.to_toml());
    let web = format!("{}/dicom-web", pons.web_url().unwrap());
    Setup {
        orthanc,
        pons,
        web,
        _state: state,
    }
}

/// A log line without its colour escapes.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, c) => out.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    out
}

fn get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http("GET", url, headers, b"").unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn accept_ts(ts: &str) -> String {
    format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}")
}

/// Runs scripts/wado_client.py; its JSON summary.
fn wado_client(web: &str, out: &Path, args: &[&str]) -> Value {
    let o = std::process::Command::new(venv_python())
        .arg(repo_root().join("scripts").join("wado_client.py"))
        .arg(web)
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "wado_client.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sop_set(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["sop"]
                .as_str()
                .unwrap_or_else(|| i.as_str().unwrap())
                .to_owned()
        })
        .collect()
}

/// Orthanc's own conversion of an instance to Explicit VR LE: the reference
/// for an instance the PACS converted on its way to us.
fn orthanc_explicit(orthanc: &Orthanc, sop: &str, dir: &Path) -> PathBuf {
    let id = orthanc.instance_id(sop).unwrap();
    let body = serde_json::json!({
        "Transcode": ELE,
        "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        "Force": true,
    });
    let url = format!("{}/instances/{id}/modify", orthanc.rest_url());
    let rsp = http("POST", &url, &[], body.to_string().as_bytes()).unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let path = dir.join(format!("{sop}.orthanc-ele.dcm"));
    std::fs::write(&path, &rsp.body).unwrap();
    path
}

fn stored(orthanc: &Orthanc, sop: &str, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{sop}.orthanc.dcm"));
    std::fs::write(&path, orthanc.instance_file(sop)).unwrap();
    path
}

/// GET with the body read as it comes: returns the log of Pons at the
/// moment the first part was complete, and the whole answer.
fn get_watching_first_part(url: &str, pons: &Pons) -> (String, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        assert!(
            !line.to_ascii_lowercase().starts_with("content-length"),
            "a streamed answer cannot know its length: {line}"
        );
    }
    let mut body = Vec::new();
    let mut log_at_first_part = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).unwrap();
        r.read_line(&mut line).unwrap();
        if log_at_first_part.is_none() && first_part_complete(&body) {
            log_at_first_part = Some(pons.log());
        }
    }
    (log_at_first_part.expect("no complete part"), body)
}

fn first_part_complete(body: &[u8]) -> bool {
    let Some(head_end) = find(body, b"\r\n\r\n", 0) else {
        return false;
    };
    let head = String::from_utf8_lossy(&body[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .split("content-length:")
        .nth(1)
        .and_then(|v| v.lines().next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(usize::MAX);
    body.len() >= head_end + 4 + len
}

#[test]
fn ct_study_streams_byte_identical_then_comes_from_the_cache() {
    let ct = testdata().ct(200);
    let files = ct.files(120); // one study: a series of 100, one of 20
    let mut s = setup("c-get", &files);
    let (study, series_a, _, _) = file_uids(&files[0]);
    let (_, series_b, _, _) = file_uids(&files[119]);
    let by_sop: BTreeMap<String, PathBuf> =
        files.iter().map(|f| (file_uids(f).2, f.clone())).collect();
    let all: BTreeSet<String> = by_sop.keys().cloned().collect();
    let out = tempfile::tempdir().unwrap();

    // A client that goes away cancels the retrieval (C-CANCEL, FE00).
    {
        let mut c = std::net::TcpStream::connect(
            s.web
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap(),
        )
        .unwrap();
        write!(
            c,
            "GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 4096];
        let _ = c.read(&mut first).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(20), || s.pons.log().lines().any(
            |l| plain(l).contains("retrieve finished") && plain(l).contains("status=FE00")
        )),
        "no cancelled retrieval in the log:\n{}",
        s.pons.log()
    );

    // The first part leaves while the PACS is still sending.
    let (log_then, body) = get_watching_first_part(&format!("{}/studies/{study}", s.web), &s.pons);
    let finished = |log: &str| {
        log.lines()
            .map(plain)
            .filter(|l| l.contains("retrieve finished") && l.contains("status=0000"))
            .count()
    };
    assert_eq!(
        finished(&log_then),
        0,
        "the first part came only after the whole retrieval"
    );
    assert_eq!(finished(&s.pons.log()), 1);
    assert!(body.ends_with(b"--\r\n"));

    // As stored: each part's data set is Orthanc's, byte for byte.
    let rsp = get(
        &format!("{}/studies/{study}", s.web),
        &[("Accept", &accept_ts("*"))],
    );
    let got = parts(&rsp);
    assert_eq!(got.iter().map(Part::sop).collect::<BTreeSet<_>>(), all);
    for p in &got {
        let reference = s.orthanc.instance_file(&p.sop());
        let (at, meta) = split_part10_header(&reference).unwrap();
        assert_eq!(p.transfer_syntax(), meta.transfer_syntax_uid);
        assert!(p.data_set() == &reference[at..], "{} differs", p.sop());
    }

    // dicomweb-client: study, series, metadata.
    let v = wado_client(&s.web, out.path(), &["study", &study]);
    assert_eq!(sop_set(&v, "instances"), all);
    let pairs: Vec<(PathBuf, Vec<u8>)> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["ts"], ELE);
            let sop = i["sop"].as_str().unwrap();
            (
                by_sop[sop].clone(),
                std::fs::read(i["path"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    compare_datasets(&pairs).unwrap();
    let v = wado_client(&s.web, out.path(), &["series", &study, &series_b]);
    let b: BTreeSet<String> = files[100..].iter().map(|f| file_uids(f).2).collect();
    assert_eq!(sop_set(&v, "instances"), b);
    let v = wado_client(&s.web, out.path(), &["metadata", &study]);
    assert_eq!(sop_set(&v, "sops"), all);
    let v = wado_client(&s.web, out.path(), &["metadata", &study, &series_a]);
    assert_eq!(sop_set(&v, "sops").len(), 100);
    let (_, _, sop, _) = file_uids(&files[7]);
    let v = wado_client(&s.web, out.path(), &["metadata", &study, &series_a, &sop]);
    let rebuilt = v["rebuilt"][0]["path"].as_str().unwrap();
    assert_same_dataset(&files[7], &std::fs::read(rebuilt).unwrap());

    // ETags: an unchanged instance or metadata answers 304.
    let instance_url = format!(
        "{}/studies/{study}/series/{series_a}/instances/{sop}",
        s.web
    );
    for url in [
        instance_url.clone(),
        format!("{}/studies/{study}/metadata", s.web),
    ] {
        let first = get(&url, &[]);
        let etag = first.header("etag").expect("ETag").to_owned();
        let again = get(&url, &[("If-None-Match", &etag)]);
        assert_eq!(again.status, 304, "{url}");
        assert_eq!(get(&url, &[("If-None-Match", "\"other\"")]).status, 200);
    }

    // What cannot be: 406 before anything is sent, 404, 400.
    let rsp = get(
        &format!("{}/studies/{study}", s.web),
        &[("Accept", &accept_ts(JPEG_BASELINE))],
    );
    assert_eq!(rsp.status, 406, "{}", rsp.text());
    assert!(rsp.text().contains(JPEG_BASELINE), "{}", rsp.text());
    let rsp = get(&format!("{}/studies/1.2.3.999", s.web), &[]);
    assert_eq!(rsp.status, 404, "{}", rsp.text());
    assert!(rsp
        .text()
        .contains("study 1.2.3.999 not found on PACS main"));
    let rsp = get(
        &format!("{}/studies/{study}/series/1.2.3.999/metadata", s.web),
        &[],
    );
    assert_eq!(rsp.status, 404, "{}", rsp.text());
    let rsp = get(&format!("{}/studies/1.2.x", s.web), &[]);
    assert_eq!(rsp.status, 400, "{}", rsp.text());
    assert!(rsp.text().contains("\"1.2.x\""), "{}", rsp.text());

    // The PACS stops: what was retrieved is still served, across a restart.
    s.orthanc.stop();
    let cached = get(
        &format!("{}/studies/{study}", s.web),
        &[("Accept", &accept_ts("*"))],
    );
    assert_eq!(
        parts(&cached)
            .iter()
            .map(|p| p.data.clone())
            .collect::<Vec<_>>(),
        got.iter().map(|p| p.data.clone()).collect::<Vec<_>>()
    );
    s.pons.restart();
    assert_eq!(
        parts(&get(&format!("{}/studies/{study}", s.web), &[])).len(),
        120
    );
    assert_eq!(get(&instance_url, &[]).status, 200);
    let md = get(
        &format!("{}/studies/{study}/series/{series_b}/metadata", s.web),
        &[],
    );
    assert_eq!(md.status, 200, "{}", md.text());
    assert_eq!(md.json().as_array().unwrap().len(), 20);
    // Not cached, PACS down: 503 naming the PACS.
    let rsp = get(&format!("{}/studies/1.2.3.999", s.web), &[]);
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert!(rsp.text().contains("PACS main"), "{}", rsp.text());
}

#[test]
fn samples_in_every_transfer_syntax() {
    let data = testdata();
    let s = setup("c-get", &data.sample_files());
    let work = tempfile::tempdir().unwrap();
    let mut converted = Vec::new();
    let mut transcoded = Vec::new();
    let mut seen_syntaxes = BTreeSet::new();
    for sample in &data.samples {
        let (study, series, sop, ts) = file_uids(&sample.path);
        let url = format!("{}/studies/{study}/series/{series}/instances/{sop}", s.web);
        // As stored: Orthanc's data set, byte for byte.
        let p = parts(&get(&url, &[("Accept", &accept_ts("*"))])).remove(0);
        let reference = s.orthanc.instance_file(&sop);
        let (at, meta) = split_part10_header(&reference).unwrap();
        assert_eq!(p.transfer_syntax(), meta.transfer_syntax_uid, "{sop}");
        if ts == DEFLATED {
            // The PACS deflates anew on the way: same content, other bytes.
            transcoded.push((stored(&s.orthanc, &sop, work.path()), p.data.clone()));
        } else {
            assert!(
                p.data_set() == &reference[at..],
                "{}: data set differs",
                sample.path.display()
            );
        }
        seen_syntaxes.insert(ts.clone());
        // Default (Explicit VR LE): the PACS converts what is compressed.
        let rsp = get(&url, &[]);
        if J2K.contains(&ts.as_str()) {
            // Orthanc 1.10 has no JPEG 2000 codec: it cannot convert.
            assert_eq!(rsp.status, 406, "{}", rsp.text());
            assert!(rsp.text().contains(&ts), "{}", rsp.text());
            continue;
        }
        let p = parts(&rsp).remove(0);
        assert_eq!(p.transfer_syntax(), ELE, "{sop}");
        if ts == ELE {
            assert!(p.data_set() == &reference[at..], "{sop}: data set differs");
        } else if [ILE, EBE].contains(&ts.as_str()) {
            transcoded.push((stored(&s.orthanc, &sop, work.path()), p.data));
        } else {
            converted.push((orthanc_explicit(&s.orthanc, &sop, work.path()), p.data));
        }
        // Other uncompressed syntaxes: rewritten by Pons.
        if !J2K.contains(&ts.as_str()) {
            for other in [ILE, EBE] {
                let p = parts(&get(&url, &[("Accept", &accept_ts(other))])).remove(0);
                assert_eq!(p.transfer_syntax(), other);
                let reference = if [ELE, ILE, EBE].contains(&ts.as_str()) {
                    stored(&s.orthanc, &sop, work.path())
                } else {
                    orthanc_explicit(&s.orthanc, &sop, work.path())
                };
                transcoded.push((reference, p.data));
            }
        }
    }
    assert!(seen_syntaxes.len() >= 8, "{seen_syntaxes:?}");
    compare_datasets(&converted).unwrap();
    compare_datasets(&transcoded).unwrap();

    // dicomweb-client: a JPEG sample as stored, and a native one's
    // metadata turned back into the data set with its bulk data.
    let jpeg = data
        .samples
        .iter()
        .find(|i| i.transfer_syntax == JPEG_BASELINE)
        .unwrap();
    let (st, se, sop, _) = file_uids(&jpeg.path);
    let v = wado_client(&s.web, work.path(), &["instance", &st, &se, &sop, "*"]);
    assert_eq!(v["instances"][0]["ts"], JPEG_BASELINE);
    assert_same_dataset(
        &jpeg.path,
        &std::fs::read(v["instances"][0]["path"].as_str().unwrap()).unwrap(),
    );
    let native: Vec<_> = data
        .samples
        .iter()
        .filter(|i| i.transfer_syntax == ELE)
        .take(10)
        .collect();
    for n in native {
        let (st, se, sop, _) = file_uids(&n.path);
        let v = wado_client(&s.web, work.path(), &["metadata", &st, &se, &sop]);
        let rebuilt = v["rebuilt"][0]["path"].as_str().unwrap();
        assert_same_dataset(&n.path, &std::fs::read(rebuilt).unwrap());
    }
}

#[test]
fn c_move_to_our_own_ae() {
    let ct = testdata().ct(200);
    let files = ct.files(120);
    let s = setup("c-move", &files);
    let (study, series_a, _, _) = file_uids(&files[0]);
    let (_, series_b, _, _) = file_uids(&files[119]);
    // Two moves at once: each request gets exactly its own instances
    // (the sub-operations are told apart by Move Originator Message ID).
    let web = s.web.clone();
    let want_a: BTreeSet<String> = files[..100].iter().map(|f| file_uids(f).2).collect();
    let want_b: BTreeSet<String> = files[100..].iter().map(|f| file_uids(f).2).collect();
    let handles: Vec<_> = [(series_a.clone(), want_a), (series_b.clone(), want_b)]
        .into_iter()
        .map(|(se, want)| {
            let url = format!("{web}/studies/{study}/series/{se}");
            std::thread::spawn(move || {
                let got: BTreeSet<String> = parts(&get(&url, &[])).iter().map(Part::sop).collect();
                assert_eq!(got, want, "series {se}");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The whole study as stored: its members are not known yet, so one more move.
    let rsp = get(
        &format!("{}/studies/{study}", s.web),
        &[("Accept", &accept_ts("*"))],
    );
    let got = parts(&rsp);
    assert_eq!(got.len(), 120);
    for p in &got {
        let reference = s.orthanc.instance_file(&p.sop());
        let (at, _) = split_part10_header(&reference).unwrap();
        assert!(p.data_set() == &reference[at..], "{} differs", p.sop());
    }
    // Three moves, three associations from the PACS to our listener.
    let accepted = s.pons.log().matches("association accepted").count();
    assert_eq!(accepted, 3, "{}", s.pons.log());

    // A STOW through Pons adds to the study: the cached member list goes,
    // and the next retrieval brings the new instance too.
    let new_file = &ct.files(121)[120];
    let boundary = "wadopathboundary";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend(std::fs::read(new_file).unwrap());
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let ct_header = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let rsp = http(
        "POST",
        &format!("{}/studies/{study}", s.web),
        &[("Content-Type", &ct_header)],
        &body,
    )
    .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let rsp = get(
        &format!("{}/studies/{study}", s.web),
        &[("Accept", &accept_ts("*"))],
    );
    let got: BTreeSet<String> = parts(&rsp).iter().map(Part::sop).collect();
    assert_eq!(got.len(), 121);
    assert!(got.contains(&file_uids(new_file).2));
}

#[test]
fn pacs_down_is_503_naming_it() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/unused", state.path());
    cfg.pacs = vec![PacsEntry::new("archive", "NOBODY", free_port())];
    let pons = Pons::start(&cfg.to_toml());
    let url = format!(
        "{}/dicom-web/studies/1.2.3/metadata",
        pons.web_url().unwrap()
    );
    let rsp = get(&url, &[]);
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert!(
        rsp.text().contains("PACS archive is unavailable"),
        "{}",
        rsp.text()
    );
}
