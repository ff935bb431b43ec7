//! What one HTTP client may hold of Pons (`[web.limits]`): each limit is
//! answered as it should be, and the other clients are served meanwhile.

mod common;

use common::multipart::dicom_body;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Everything the server sends until it closes, and when it closed.
fn read_to_close(mut s: TcpStream) -> (String, Instant) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), Instant::now())
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

fn healthz(port: u16) -> u16 {
    http("GET", &format!("http://127.0.0.1:{port}/healthz"), &[], b"")
        .map(|r| r.status)
        .unwrap_or(0)
}

fn limited(cfg: &PonsConfig, limits: &[(&str, i64)]) -> Pons {
    Pons::start(&set_numbers(&cfg.to_toml(), "web.limits", limits))
}

#[test]
fn slow_silent_and_oversized_clients_are_cut_off_while_others_are_served() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    // A PACS nobody answers for: the STOW-RS route reads its body first.
    cfg.pacs = vec![PacsEntry::new("main", "PACS", free_port())];
    let _pons = limited(
        &cfg,
        &[
            ("max_connections", 6),
            ("max_headers", 20),
            ("max_header_bytes", 16384),
            ("header_timeout_secs", 2),
            ("body_idle_secs", 2),
        ],
    );
    let port = cfg.web_port;

    // Heads too big or with too many fields: 431.
    let big = "x".repeat(20_000);
    let rsp = http("GET", &pons_url(port, "/healthz"), &[("X-Big", &big)], b"").unwrap();
    assert_eq!(rsp.status, 431);
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("X-H{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rsp = http("GET", &pons_url(port, "/healthz"), &many, b"").unwrap();
    assert_eq!(rsp.status, 431);

    // Slowloris: three heads sent a line every 500 ms are cut off after
    // header_timeout_secs, while a normal client is answered at once.
    let started = Instant::now();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(port);
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pons\r\n");
                let reader = s.try_clone().unwrap();
                let closed = std::thread::spawn(move || read_to_close(reader));
                for i in 0..40 {
                    std::thread::sleep(Duration::from_millis(500));
                    if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                        .is_err()
                    {
                        break;
                    }
                }
                closed.join().unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    assert_eq!(healthz(port), 200);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for s in slow {
        let (answer, closed_at) = s.join().unwrap();
        let held = closed_at - started;
        assert!(
            held < Duration::from_secs(5),
            "a slow head held its connection {held:?}"
        );
        assert!(!answer.contains(" 200 "), "{answer}");
    }

    // Silent connections take every slot: the next client gets 503 with
    // Retry-After at once; once they time out, clients are served again.
    let silent: Vec<TcpStream> = (0..6).map(|_| connect(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = connect(port);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pons\r\n\r\n")
        .unwrap();
    let (answer, _) = read_to_close(s);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("Retry-After: 2"), "{answer}");
    assert!(answer.contains("web.limits.max_connections"), "{answer}");
    assert!(
        wait_until(Duration::from_secs(5), || healthz(port) == 200),
        "silent connections were never closed"
    );
    drop(silent);

    // A body that stops arriving fails after body_idle_secs, with a reason.
    let mut s = connect(port);
    let head = "POST /dicom-web/studies HTTP/1.1\r\nHost: pons\r\n\
        Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
        Content-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\nDICM";
    s.write_all(head.as_bytes()).unwrap();
    let t = Instant::now();
    let (answer, _) = read_to_close(s);
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(answer.contains("body_idle_secs"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert_eq!(healthz(port), 200);
}

fn pons_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

const STOW_TYPE: &str = "multipart/related; type=\"application/dicom\"; boundary=lim";

#[test]
fn bodies_past_their_limits_get_413_and_what_came_before_is_stored() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = limited(
        &cfg,
        &[
            ("stow_max_parts", 2),
            ("stow_max_mb", 8),
            ("json_max_kb", 1),
        ],
    );
    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    let files = testdata().ct(100).files(3);
    let parts: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();

    // Three parts, two allowed: the first two are stored, and the answer says so.
    let rsp = http(
        "POST",
        &format!("{base}/studies"),
        &[("Content-Type", STOW_TYPE)],
        &dicom_body("lim", &parts),
    )
    .unwrap();
    assert_eq!(rsp.status, 413, "{}", rsp.text());
    let text = rsp.text();
    assert!(text.contains("more than 2 parts"), "{text}");
    assert!(
        text.contains("first 2 parts were processed (2 stored)"),
        "{text}"
    );
    let stored: std::collections::BTreeSet<String> =
        files[..2].iter().map(|f| file_uids(f).2).collect();
    assert_eq!(orthanc.instance_uids(), stored);

    // A declared length past stow_max_mb: refused before a byte is read.
    let mut s = connect(cfg.web_port);
    let head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: pons\r\nContent-Type: {STOW_TYPE}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        9 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    let (answer, _) = read_to_close(s);
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(
        answer.contains("web.limits.stow_max_mb (8 MiB)"),
        "{answer}"
    );

    // A chunked body that grows past it: 413 as soon as it does.
    let mut s = connect(cfg.web_port);
    let head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: pons\r\nContent-Type: {STOW_TYPE}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let first = b"--lim\r\nContent-Type: application/dicom\r\n\r\n";
    let _ = s.write_all(format!("{:x}\r\n", first.len()).as_bytes());
    let _ = s.write_all(first);
    let _ = s.write_all(b"\r\n");
    let chunk = vec![0x55u8; 64 * 1024];
    for _ in 0..(10 * 16) {
        let sent = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let (answer, _) = read_to_close(s);
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.contains("stow_max_mb"), "{answer}");
    assert_eq!(orthanc.instance_uids(), stored);

    // A commitment request past json_max_kb.
    let json = format!(
        "[{{\"00081195\":{{\"vr\":\"UI\",\"Value\":[\"{}\"]}}}}]",
        "1".repeat(2000)
    );
    let rsp = http(
        "POST",
        &format!("{base}/commitment-requests/1.2.3.4"),
        &[("Content-Type", "application/dicom+json")],
        json.as_bytes(),
    )
    .unwrap();
    assert_eq!(rsp.status, 413, "{}", rsp.text());
    assert!(
        rsp.text().contains("web.limits.json_max_kb (1 KiB)"),
        "{}",
        rsp.text()
    );

    // A handler that panics (a hook compiled only into test builds) costs
    // its own request a 500, nothing else.
    let rsp = http(
        "GET",
        &format!("{base}/studies?PatientID=PONS-TEST-PANIC"),
        &[("Accept", "application/dicom+json")],
        b"",
    )
    .unwrap();
    assert_eq!(rsp.status, 500, "{}", rsp.text());
    assert!(
        pons.log().contains("request handler panicked"),
        "{}",
        pons.log()
    );
    let rsp = http(
        "GET",
        &format!("{base}/studies?StudyInstanceUID={}", file_uids(&files[0]).0),
        &[("Accept", "application/dicom+json")],
        b"",
    )
    .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json().as_array().map(Vec::len), Some(1));
}
