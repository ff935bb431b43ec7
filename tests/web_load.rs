//! Direction B under load, against real and scripted peers: the association
//! pool per PACS, 503 with Retry-After instead of a hang, QIDO-RS pages that
//! stop the PACS early and say when more exist, identical work done once,
//! and kept-alive connections without Nagle stalls.

mod common;

use common::multipart::parts;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Pons with one `[[pacs]]` (AE `pacs_ae` on `port`) and these extra keys
/// in its `[[pacs]]` and `[web]` tables.
fn pons_for(
    pacs_ae: &str,
    port: u16,
    pacs_keys: &str,
    web_keys: &str,
) -> (Pons, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/unused", state.path());
    cfg.pacs = vec![PacsEntry::new("main", pacs_ae, port)];
    let toml = cfg
        .to_toml()
        .replacen("[web]\n", &format!("[web]\n{web_keys}\n"), 1)
        .replacen("retrieve = ", &format!("{pacs_keys}\nretrieve = "), 1);
    (Pons::start(&toml), state)
}

fn dicomweb(pons: &Pons) -> String {
    format!("{}/dicom-web", pons.web_url().unwrap())
}

/// Every line the peer printed within `wait`.
fn lines_for(peer: &mut ScriptPeer, wait: Duration) -> Vec<String> {
    std::thread::sleep(wait);
    peer.lines_now()
}

#[test]
fn a_qido_page_stops_the_pacs_and_says_more_exist() {
    let port = free_port();
    let mut pacs = ScriptPeer::start("find_scp.py", &[&port.to_string(), "many"]);
    let (pons, _state) = pons_for("FAKEPACS", port, "", "qido_max_results = 30");
    let web = dicomweb(&pons);

    let rsp = http("GET", &format!("{web}/studies?limit=10&offset=5"), &[], b"").unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let matches = rsp.json();
    assert_eq!(matches.as_array().unwrap().len(), 10);
    assert_eq!(
        matches[0]["0020000D"]["Value"][0], "1.2.826.0.1.3680043.10.998.6",
        "offset 5 skips five"
    );
    let warning = rsp.header("warning").unwrap_or_default();
    assert!(warning.contains("additional results"), "{warning:?}");
    // The PACS was stopped right after the one match that told of more.
    let line = pacs.next_line();
    let sent: usize = line
        .strip_prefix("cancelled after ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the PACS was not cancelled: {line}"));
    // Soon after the 16th (of 1000), however slow the machine.
    assert!((16..100).contains(&sent), "{line}");

    // No limit: web.qido_max_results, never silently.
    let rsp = http("GET", &format!("{web}/studies"), &[], b"").unwrap();
    assert_eq!(rsp.json().as_array().unwrap().len(), 30);
    assert!(rsp
        .header("warning")
        .unwrap_or_default()
        .contains("additional results"));
    assert!(pacs.next_line().starts_with("cancelled after"));

    // The last page: no Warning.
    let rsp = http("GET", &format!("{web}/studies?offset=995"), &[], b"").unwrap();
    assert_eq!(rsp.json().as_array().unwrap().len(), 5);
    assert_eq!(rsp.header("warning"), None);
}

#[test]
fn identical_concurrent_queries_share_one_c_find() {
    let port = free_port();
    let mut pacs = ScriptPeer::start("busy_scp.py", &[&port.to_string(), "8", "2"]);
    let (pons, _state) = pons_for("BUSYPACS", port, "", "");
    let url = format!("{}/studies?PatientID=BUSY", dicomweb(&pons));
    let answers: Vec<HttpResponse> = std::thread::scope(|s| {
        let all: Vec<_> = (0..10)
            .map(|_| s.spawn(|| http("GET", &url, &[], b"").unwrap()))
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for rsp in &answers {
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        assert_eq!(rsp.json().as_array().unwrap().len(), 5);
    }
    let finds = lines_for(&mut pacs, Duration::from_millis(300));
    assert_eq!(
        finds,
        ["associated", "find"],
        "ten identical queries, one C-FIND"
    );
    // Nothing is kept (web.qido_cache_secs = 0): the next one asks again,
    // on the association the first left idle.
    assert_eq!(http("GET", &url, &[], b"").unwrap().status, 200);
    assert_eq!(lines_for(&mut pacs, Duration::from_millis(300)), ["find"]);
}

/// `n` concurrent QIDO-RS queries, each for another patient (none shared):
/// (status, Retry-After, seconds) of each.
fn distinct_queries(web: &str, n: usize) -> Vec<(u16, Option<String>, f64)> {
    std::thread::scope(|s| {
        let all: Vec<_> = (0..n)
            .map(|i| {
                let url = format!("{web}/studies?PatientID=P{i}");
                s.spawn(move || {
                    let start = Instant::now();
                    let rsp = http("GET", &url, &[], b"").unwrap();
                    let retry = rsp.header("retry-after").map(str::to_owned);
                    (rsp.status, retry, start.elapsed().as_secs_f64())
                })
            })
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_full_pacs_gets_503_with_retry_after_within_the_wait_never_a_hang() {
    let port = free_port();
    let mut pacs = ScriptPeer::start("busy_scp.py", &[&port.to_string(), "2", "1.0"]);
    // We may open 8; the PACS takes 2 and refuses the rest as transient.
    let (pons, _state) = pons_for(
        "BUSYPACS",
        port,
        "max_associations = 8\nqueue_timeout_secs = 2",
        "",
    );
    let answers = distinct_queries(&dicomweb(&pons), 50);
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    assert!(ok >= 2, "{answers:?}");
    for (status, retry_after, secs) in &answers {
        match status {
            200 => {}
            503 => {
                assert!(retry_after.is_some(), "503 without Retry-After");
                // A hang would last the PACS's whole backlog (~25 s).
                assert!(*secs < 10.0, "a 503 took {secs:.1} s (queue wait 2 s)");
            }
            other => panic!("HTTP {other}: {answers:?}\n{}", pons.log()),
        }
    }
    let lines = lines_for(&mut pacs, Duration::from_millis(500));
    assert!(lines.iter().any(|l| l == "rejected"), "{lines:?}");
}

#[test]
fn within_the_pacs_limit_no_request_fails_for_the_limit() {
    let port = free_port();
    let mut pacs = ScriptPeer::start("busy_scp.py", &[&port.to_string(), "2", "0.2"]);
    let (pons, _state) = pons_for(
        "BUSYPACS",
        port,
        "max_associations = 2\nqueue_timeout_secs = 30",
        "",
    );
    let answers = distinct_queries(&dicomweb(&pons), 20);
    assert!(
        answers.iter().all(|a| a.0 == 200),
        "{answers:?}\n{}",
        pons.log()
    );
    let lines = lines_for(&mut pacs, Duration::from_millis(500));
    let count = |what: &str| lines.iter().filter(|l| *l == what).count();
    assert_eq!(count("find"), 20);
    assert_eq!(count("rejected"), 0, "{lines:?}");
    // Two associations carried all twenty: reused, never more than allowed.
    assert_eq!(count("associated"), 2, "{lines:?}");
}

/// GET on a kept-alive connection: the seconds until the whole body is in.
fn get_kept_alive(conn: &mut BufReader<TcpStream>, host: &str, path: &str, accept: &str) -> f64 {
    let start = Instant::now();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    let (mut length, mut chunked) = (0, false);
    conn.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{line}");
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().unwrap();
        }
        chunked |= k.eq_ignore_ascii_case("transfer-encoding");
    }
    if !chunked {
        conn.read_exact(&mut vec![0; length]).unwrap();
        return start.elapsed().as_secs_f64();
    }
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        conn.read_exact(&mut vec![0; size + 2]).unwrap(); // and its CRLF
        if size == 0 {
            return start.elapsed().as_secs_f64();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Twenty requests on one kept-alive connection take no longer than on
/// fresh ones: a delayed ACK would cost ~40 ms each.
fn assert_no_nagle_stall(web: &str, path: &str, accept: &str) {
    let host = web.trim_start_matches("http://").to_owned();
    let mut conn = BufReader::new(TcpStream::connect(&host).unwrap());
    // Alternated, so that a change in the machine's load hits both alike.
    let (mut fresh, mut kept) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut new_conn = BufReader::new(TcpStream::connect(&host).unwrap());
        fresh.push(get_kept_alive(&mut new_conn, &host, path, accept));
        kept.push(get_kept_alive(&mut conn, &host, path, accept));
    }
    let (fresh, kept) = (median(fresh), median(kept));
    // A stall is ~40 ms a request; noise grows with the request's own cost.
    assert!(
        kept < fresh * 1.25 + 0.020,
        "{path}: kept-alive median {:.1} ms, fresh {:.1} ms",
        kept * 1e3,
        fresh * 1e3
    );
}

#[test]
fn kept_alive_queries_wait_for_no_delayed_ack() {
    let port = free_port();
    let _pacs = ScriptPeer::start("busy_scp.py", &[&port.to_string(), "8", "0"]);
    let (pons, _state) = pons_for("BUSYPACS", port, "", "");
    let path = "/dicom-web/studies?PatientID=BUSY";
    assert_no_nagle_stall(&pons.web_url().unwrap(), path, "application/dicom+json");
}

fn file_bytes(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

fn bytes_counted(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn eight_cold_retrievals_of_one_study_move_it_once() {
    let data = testdata();
    let ct = data.ct(200);
    // The first study of the set, whole.
    let study = file_uids(&ct.instances[0].path).0;
    let (files, wanted): (Vec<_>, std::collections::BTreeSet<String>) = ct
        .instances
        .iter()
        .filter(|i| file_uids(&i.path).0 == study)
        .map(|i| (i.path.clone(), i.sop_instance.clone()))
        .unzip();
    let orthanc = Orthanc::start();
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    assert_eq!(
        orthanc.wait_for_instances(files.len(), Duration::from_secs(60)),
        files.len()
    );
    // Pons reaches the PACS through a relay that counts what the PACS sends.
    let counted = tempfile::NamedTempFile::new().unwrap();
    let relay_port = free_port();
    let _relay = ScriptPeer::start(
        "count_proxy.py",
        &[
            &relay_port.to_string(),
            &orthanc.dicom_port().to_string(),
            &counted.path().to_string_lossy(),
        ],
    );
    let (pons, _state) = pons_for(orthanc.aet(), relay_port, "", "");
    let url = format!("{}/studies/{study}", dicomweb(&pons));
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let answers: Vec<HttpResponse> = std::thread::scope(|s| {
        let all: Vec<_> = (0..8)
            .map(|_| s.spawn(|| http("GET", &url, &[("Accept", accept)], b"").unwrap()))
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for rsp in &answers {
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        let got: std::collections::BTreeSet<String> = parts(rsp).iter().map(|p| p.sop()).collect();
        assert_eq!(got, wanted, "every client gets every instance");
    }
    std::thread::sleep(Duration::from_millis(300));
    let moved = bytes_counted(counted.path());
    let study_bytes = file_bytes(&files);
    assert!(
        moved > study_bytes * 9 / 10 && moved < study_bytes * 3 / 2,
        "the PACS sent {moved} bytes for a study of {study_bytes}: not once"
    );
    // Now in the cache: an instance streams out in pieces, kept alive or not.
    let (_, series, sop, _) = file_uids(&files[0]);
    let path = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    assert_no_nagle_stall(&pons.web_url().unwrap(), &path, accept);
    let path = format!("/dicom-web/studies/{study}/series/{series}/metadata");
    assert_no_nagle_stall(&pons.web_url().unwrap(), &path, "application/dicom+json");
}
