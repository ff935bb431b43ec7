//! Test support for Pons integration tests: real peers, test data, helpers.
//!
//! Use from an integration test with `mod common;`. Everything here is
//! synchronous (std only, no reqwest), so it works from `#[test]` and from
//! inside `#[tokio::test]` alike.
//!
//! - [`testdata`]: pydicom's real samples (every common transfer syntax) and
//!   synthetic CT series, made once by `scripts/make_testdata.py`.
//! - [`Orthanc`]: a private Orthanc (DICOMweb origin + DIMSE PACS) on free
//!   ports with its own storage directory.
//! - [`Pons`]: the daemon under test, from its config text ([`PonsConfig`]
//!   builds one).
//! - [`Postgres`]: a private PostgreSQL cluster (Debian's packages).
//! - DCMTK: [`storescu`] (each file sent in its own transfer syntax),
//!   [`echoscu`], [`StoreScp`].
//! - [`ScriptPeer`]: a Python peer from `scripts/` (fake PACS, faulty
//!   origin, commitment SCU) that prints "ready" once it listens;
//!   [`script_command`] for scripts that run to completion.
//! - [`compare_datasets`] / [`assert_same_dataset`]: data set equality
//!   ignoring the file meta group.
//!
//! Every child process gets `TCP_NODELAY=1` (Debian's DCMTK and Orthanc leave
//! Nagle on otherwise), is killed on drop, and is also killed by the kernel
//! when the thread that spawned it exits (`PR_SET_PDEATHSIG`), so a test
//! binary that dies does not leave peers behind. Start fixtures on the test's
//! own thread (or a runtime worker that outlives them), not in a short-lived
//! helper thread.

#![allow(dead_code)] // each test binary uses a different subset

pub mod archive;
pub mod certs;
mod dcmtk;
pub mod multipart;
mod orthanc;
mod pons;
mod postgres;
mod script_peer;

pub use dcmtk::*;
pub use orthanc::*;
pub use pons::*;
#[allow(unused_imports)] // only some test binaries start PostgreSQL
pub use postgres::*;
#[allow(unused_imports)] // only some test binaries run Python peers
pub use script_peer::*;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------
// Paths, ports, processes
// ---------------------------------------------------------------------------

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$PONS_CACHE`, or `$HOME/.cache/pons`: venv, test data, build cache.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("PONS_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache").join("pons")
        }
    }
}

/// The venv python (pydicom, pynetdicom, dicomweb-client, numpy). Runs
/// `scripts/install-deps.sh` once if the venv is missing.
pub fn venv_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let py = cache_dir().join("venv").join("bin").join("python");
        if !py.exists() {
            let script = repo_root().join("scripts").join("install-deps.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success() && py.exists(),
                "{} failed ({}); run it by hand.\nstdout:\n{}\nstderr:\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        py
    })
    .clone()
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Never hands out the
/// same port twice within one test process. Taken below the ephemeral range
/// when there is room: between now and the server's bind, an outgoing
/// connection could otherwise take the port as its source.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    let ephemeral_low: u64 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    if ephemeral_low > 12_000 {
        // Spread by process, so that test binaries run one after another
        // start from different places.
        let span = ephemeral_low - 10_000;
        let mut next = 10_000 + (u64::from(std::process::id()) * 7919) % span;
        let mut given = given.lock().unwrap();
        for _ in 0..1000 {
            next = 10_000 + (next - 10_000 + 1) % span;
            let port = next as u16;
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("free_port: no new free port after 100 tries");
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `cond` every 100 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes `cmd` die with the spawning thread and sets `TCP_NODELAY=1`.
fn prepare(cmd: &mut Command) -> &mut Command {
    cmd.env("TCP_NODELAY", "1");
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// This test binary running only its test `name` (exact match, output not
/// captured), prepared like every child: a way to get a second process
/// that uses the library, e.g. a job claimer that can be killed. Such a
/// helper is `#[ignore]`d so that it does not pass as a test of its own:
/// it is run here with `--include-ignored`.
pub fn self_test_command(name: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    prepare(&mut cmd)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdin(Stdio::null());
    cmd
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Reaps the child.
fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = text.unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let g = f.try_clone().expect("dup log file");
    (Stdio::from(f), Stdio::from(g))
}

// ---------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------

/// UIDs of a DICOM file, read up to its pixel data: (study, series, SOP
/// instance, transfer syntax).
pub fn file_uids(path: &Path) -> (String, String, String, String) {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    let s = |t| {
        obj.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_owned()
    };
    use dicom_dictionary_std::tags;
    (
        s(tags::STUDY_INSTANCE_UID),
        s(tags::SERIES_INSTANCE_UID),
        s(tags::SOP_INSTANCE_UID),
        obj.meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_owned(),
    )
}

/// One line of a `manifest.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub path: PathBuf,
    pub transfer_syntax: String,
    pub sop_class: String,
    pub sop_instance: String,
}

/// Paths of the generated test data (see `scripts/make_testdata.py`).
#[derive(Debug)]
pub struct TestData {
    /// `$PONS_CACHE/testdata`
    pub root: PathBuf,
    /// `root/samples`: pydicom's real sample files, one per SOP Instance UID.
    pub samples_dir: PathBuf,
    /// `samples/manifest.tsv`, in file-name order.
    pub samples: Vec<Instance>,
}

/// A synthetic CT set `ct/N` (N instances, ~0.5 MB each, explicit VR LE).
#[derive(Debug, Clone)]
pub struct CtSet {
    pub dir: PathBuf,
    /// In file order (ct00000.dcm, ct00001.dcm, ...): series of 100 slices.
    pub instances: Vec<Instance>,
}

impl CtSet {
    /// Paths of the first `n` instances (all of them if `n` is larger).
    pub fn files(&self, n: usize) -> Vec<PathBuf> {
        self.instances
            .iter()
            .take(n)
            .map(|i| i.path.clone())
            .collect()
    }
}

fn run_make_testdata(root: &Path, args: &[&str]) {
    let script = repo_root().join("scripts").join("make_testdata.py");
    let out = Command::new(venv_python())
        .arg(&script)
        .arg("--out")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "make_testdata.py {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a `manifest.tsv` (file, transfer syntax, SOP class, SOP instance).
pub fn read_manifest(path: &Path) -> Vec<Instance> {
    let dir = path.parent().expect("manifest has a parent dir");
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "bad manifest line in {}: {l:?}", path.display());
            Instance {
                path: dir.join(f[0]),
                transfer_syntax: f[1].to_owned(),
                sop_class: f[2].to_owned(),
                sop_instance: f[3].to_owned(),
            }
        })
        .collect()
}

/// The sample set, made on first use (once per process; make_testdata.py
/// takes a file lock, so parallel test processes do not race either).
pub fn testdata() -> &'static TestData {
    static TD: OnceLock<TestData> = OnceLock::new();
    TD.get_or_init(|| {
        let root = cache_dir().join("testdata");
        run_make_testdata(&root, &[]);
        let samples_dir = root.join("samples");
        let samples = read_manifest(&samples_dir.join("manifest.tsv"));
        assert!(!samples.is_empty(), "empty sample manifest");
        TestData {
            root,
            samples_dir,
            samples,
        }
    })
}

impl TestData {
    /// The synthetic CT set of `n` instances (`ct/n`), generated if missing.
    /// Prefer a few standard sizes (200, 1000) and take a prefix with
    /// [`CtSet::files`]: each size is a separate set of files on disk.
    pub fn ct(&self, n: usize) -> CtSet {
        static DONE: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
        let done = DONE.get_or_init(Default::default);
        let mut done = done.lock().unwrap();
        if !done.contains(&n) {
            run_make_testdata(&self.root, &["--no-samples", "--ct", &n.to_string()]);
            done.insert(n);
        }
        let dir = self.root.join("ct").join(n.to_string());
        let instances = read_manifest(&dir.join("manifest.tsv"));
        assert_eq!(instances.len(), n, "ct/{n}/manifest.tsv");
        CtSet { dir, instances }
    }

    /// Paths of all sample files.
    pub fn sample_files(&self) -> Vec<PathBuf> {
        self.samples.iter().map(|s| s.path.clone()).collect()
    }

    /// Distinct transfer syntax UIDs among the samples.
    pub fn sample_transfer_syntaxes(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|s| s.transfer_syntax.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client (std only, usable from sync and async tests)
// ---------------------------------------------------------------------------

/// A response from [`http`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response is not JSON ({e}): {}", self.text());
        })
    }
}

/// One HTTP/1.1 request to `url` (`http://host:port/path?query` only), with
/// `Connection: close`. Handles Content-Length, chunked and read-to-EOF bodies.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("not http://: {url}"))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        let _ = write!(req, "Content-Length: {}\r\n", body.len());
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;

    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
        // no body
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn http_ok(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let resp = http(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    assert!(
        (200..300).contains(&resp.status),
        "{method} {url}: HTTP {}: {}",
        resp.status,
        resp.text()
    );
    resp
}
