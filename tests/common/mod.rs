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
//! - DCMTK: [`storescu`] (each file sent in its own transfer syntax),
//!   [`echoscu`], [`StoreScp`].
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

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

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
/// same port twice within one test process.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
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

// ---------------------------------------------------------------------------
// Orthanc
// ---------------------------------------------------------------------------

/// Orthanc's DICOMweb plugin as packaged by Debian (orthanc-dicomweb).
pub const ORTHANC_DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A DIMSE peer Orthanc knows (its "DicomModalities"): C-MOVE destinations,
/// storage commitment report targets.
#[derive(Debug, Clone)]
pub struct Modality {
    pub name: String,
    pub aet: String,
    pub host: String,
    pub port: u16,
}

impl Modality {
    pub fn new(aet: &str, port: u16) -> Self {
        Modality {
            name: aet.to_owned(),
            aet: aet.to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
        }
    }
}

/// Options for [`Orthanc::start_with`].
#[derive(Debug, Clone)]
pub struct OrthancOptions {
    /// Orthanc's own AE title (default "ORTHANC").
    pub aet: String,
    pub modalities: Vec<Modality>,
    /// Merged over the generated JSON config (top-level keys replace).
    pub extra: Value,
}

impl Default for OrthancOptions {
    fn default() -> Self {
        OrthancOptions {
            aet: "ORTHANC".to_owned(),
            modalities: Vec::new(),
            extra: json!({}),
        }
    }
}

/// A private Orthanc: DICOMweb origin at `/dicom-web` and DIMSE PACS, on free
/// 127.0.0.1 ports, with its own storage. Killed on drop.
pub struct Orthanc {
    child: Option<Child>,
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    http_port: u16,
    dicom_port: u16,
    aet: String,
}

impl Orthanc {
    /// Starts an Orthanc with default options (AE "ORTHANC", no modalities).
    pub fn start() -> Orthanc {
        Self::start_with(OrthancOptions::default())
    }

    /// Starts an Orthanc that knows `modalities` (C-MOVE destinations etc.).
    pub fn start_with_modalities(modalities: &[Modality]) -> Orthanc {
        Self::start_with(OrthancOptions {
            modalities: modalities.to_vec(),
            ..Default::default()
        })
    }

    pub fn start_with(opts: OrthancOptions) -> Orthanc {
        let dir = tempfile::Builder::new()
            .prefix("pons-orthanc-")
            .tempdir()
            .expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let http_port = free_port();
        let dicom_port = free_port();
        let mut modalities = serde_json::Map::new();
        for m in &opts.modalities {
            modalities.insert(m.name.clone(), json!([m.aet, m.host, m.port]));
        }
        let mut config = json!({
            "Name": format!("pons-test-{dicom_port}"),
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": false,
            "HttpServerEnabled": true,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "DicomServerEnabled": true,
            "DicomAet": opts.aet,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": false,
            "DicomCheckModalityHost": false,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowGet": true,
            "DicomAlwaysAllowMove": true,
            "UnknownSopClassAccepted": true,
            "DicomModalities": modalities,
            "StableAge": 1,
            "SaveJobs": false,
            "Plugins": [ORTHANC_DICOMWEB_PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true },
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), opts.extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let config_path = dir.path().join("orthanc.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).expect("write config");
        let log_path = dir.path().join("orthanc.log");
        let mut o = Orthanc {
            child: None,
            dir,
            config_path,
            log_path,
            http_port,
            dicom_port,
            aet: opts.aet,
        };
        o.spawn();
        o
    }

    fn spawn(&mut self) {
        assert!(
            Path::new(ORTHANC_DICOMWEB_PLUGIN).exists(),
            "{ORTHANC_DICOMWEB_PLUGIN} missing: run scripts/install-deps.sh"
        );
        let (out, err) = log_file(&self.log_path);
        let mut cmd = Command::new("Orthanc");
        prepare(&mut cmd)
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Orthanc (run scripts/install-deps.sh): {e}"));
        let url = format!("{}/system", self.rest_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "Orthanc exited during startup ({status}); log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            if matches!(http("GET", &url, &[], b""), Ok(r) if r.status == 200)
                && wait_for_port(self.dicom_port, Duration::from_millis(10))
            {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Orthanc did not answer GET {url} within 30 s; log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
    }

    pub fn aet(&self) -> &str {
        &self.aet
    }
    pub fn dicom_port(&self) -> u16 {
        self.dicom_port
    }
    pub fn http_port(&self) -> u16 {
        self.http_port
    }
    /// `http://127.0.0.1:PORT` (Orthanc's REST API root).
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
    /// `http://127.0.0.1:PORT/dicom-web` (no trailing slash).
    pub fn dicomweb_url(&self) -> String {
        format!("{}/dicom-web", self.rest_url())
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// GET a REST path (e.g. "/statistics"); panics unless 2xx.
    pub fn get_json(&self, path: &str) -> Value {
        http_ok("GET", &format!("{}{path}", self.rest_url()), &[], b"").json()
    }
    /// POST a JSON body to a REST path; panics unless 2xx.
    pub fn post_json(&self, path: &str, body: &Value) -> Value {
        let body = serde_json::to_vec(body).unwrap();
        let url = format!("{}{path}", self.rest_url());
        http_ok("POST", &url, &[("Content-Type", "application/json")], &body).json()
    }

    /// Number of instances stored.
    pub fn instance_count(&self) -> usize {
        self.get_json("/statistics")["CountInstances"]
            .as_u64()
            .expect("CountInstances") as usize
    }

    /// SOP Instance UIDs of all stored instances.
    pub fn instance_uids(&self) -> BTreeSet<String> {
        let found = self.post_json(
            "/tools/find",
            &json!({"Level": "Instance", "Query": {}, "Expand": true}),
        );
        found
            .as_array()
            .expect("tools/find answers an array")
            .iter()
            .map(|i| {
                i["MainDicomTags"]["SOPInstanceUID"]
                    .as_str()
                    .expect("SOPInstanceUID")
                    .to_owned()
            })
            .collect()
    }

    /// Orthanc's resource ID of the instance with this SOP Instance UID.
    pub fn instance_id(&self, sop_uid: &str) -> Option<String> {
        let url = format!("{}/tools/lookup", self.rest_url());
        let found = http_ok("POST", &url, &[], sop_uid.as_bytes()).json();
        found.as_array()?.iter().find_map(|r| {
            (r["Type"] == "Instance").then(|| r["ID"].as_str().unwrap_or_default().to_owned())
        })
    }

    /// The stored PS3.10 file of an instance, as Orthanc keeps it (in the
    /// transfer syntax it was received in). Panics if unknown.
    pub fn instance_file(&self, sop_uid: &str) -> Vec<u8> {
        let id = self
            .instance_id(sop_uid)
            .unwrap_or_else(|| panic!("Orthanc has no instance {sop_uid}"));
        http_ok(
            "GET",
            &format!("{}/instances/{id}/file", self.rest_url()),
            &[],
            b"",
        )
        .body
    }

    /// Polls until at least `n` instances are stored; returns the last count.
    pub fn wait_for_instances(&self, n: usize, timeout: Duration) -> usize {
        let mut count = 0;
        wait_until(timeout, || {
            count = self.instance_count();
            count >= n
        });
        count
    }

    /// Deletes every stored instance (via DELETE /patients/{id}).
    pub fn clear(&self) {
        let patients = self.get_json("/patients");
        for p in patients.as_array().into_iter().flatten() {
            let url = format!("{}/patients/{}", self.rest_url(), p.as_str().unwrap());
            http_ok("DELETE", &url, &[], b"");
        }
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s). Storage stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(10));
        }
    }

    /// SIGKILL, no grace. Storage stays (as a crash leaves it).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (if running) and starts again: same config, ports and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Orthanc log tail ({}) ---\n{}\n---",
                self.log_path.display(),
                tail(&self.log_path, 20)
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Pons
// ---------------------------------------------------------------------------

/// `[spool] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    Spool,
    Direct,
}

impl SpoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolMode::Spool => "spool",
            SpoolMode::Direct => "direct",
        }
    }
}

/// A known DIMSE peer (`[[ae]]`).
#[derive(Debug, Clone)]
pub struct KnownAe {
    pub title: String,
    pub host: String,
    pub port: u16,
}

impl KnownAe {
    pub fn new(title: &str, port: u16) -> Self {
        KnownAe {
            title: title.to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
        }
    }
}

/// The pieces of a Pons config that tests vary. [`PonsConfig::to_toml`]
/// renders it; tests may append more TOML (e.g. extra tables) to the result.
#[derive(Debug, Clone)]
pub struct PonsConfig {
    pub ae_title: String,
    pub dimse_port: u16,
    pub web_port: u16,
    pub accept_any_calling_ae: bool,
    pub upstream_url: String,
    pub stow_batch: u32,
    pub stow_concurrency: u32,
    pub spool_mode: SpoolMode,
    pub spool_dir: PathBuf,
    /// "memory" or "sqlite:///abs/path.db"
    pub jobs_url: String,
    pub known_aes: Vec<KnownAe>,
}

impl PonsConfig {
    /// Free ports, AE "PONS", spool mode with spool dir and sqlite job table
    /// under `state_dir`, any calling AE accepted, no known AEs.
    pub fn new(upstream_url: &str, state_dir: &Path) -> Self {
        PonsConfig {
            ae_title: "PONS".to_owned(),
            dimse_port: free_port(),
            web_port: free_port(),
            accept_any_calling_ae: true,
            upstream_url: upstream_url.to_owned(),
            stow_batch: 50,
            stow_concurrency: 4,
            spool_mode: SpoolMode::Spool,
            spool_dir: state_dir.join("spool"),
            jobs_url: format!("sqlite://{}", state_dir.join("jobs.db").display()),
            known_aes: Vec::new(),
        }
    }

    pub fn to_toml(&self) -> String {
        pons_config(self)
    }
}

fn toml_str(s: &str) -> String {
    // TOML basic strings accept JSON string escapes.
    serde_json::to_string(s).unwrap()
}

/// Renders a Pons config file (see config/pons.toml for every key).
pub fn pons_config(c: &PonsConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[dimse]");
    let _ = writeln!(s, "ae_title = {}", toml_str(&c.ae_title));
    let _ = writeln!(s, "listen = \"127.0.0.1:{}\"", c.dimse_port);
    let _ = writeln!(s, "accept_any_calling_ae = {}", c.accept_any_calling_ae);
    let _ = writeln!(s, "\n[web]");
    let _ = writeln!(s, "listen = \"127.0.0.1:{}\"", c.web_port);
    let _ = writeln!(s, "\n[upstream]");
    let _ = writeln!(s, "url = {}", toml_str(&c.upstream_url));
    let _ = writeln!(s, "stow_batch = {}", c.stow_batch);
    let _ = writeln!(s, "stow_concurrency = {}", c.stow_concurrency);
    let _ = writeln!(s, "\n[spool]");
    let _ = writeln!(s, "mode = \"{}\"", c.spool_mode.as_str());
    let _ = writeln!(s, "dir = {}", toml_str(&c.spool_dir.to_string_lossy()));
    let _ = writeln!(s, "\n[jobs]");
    let _ = writeln!(s, "url = {}", toml_str(&c.jobs_url));
    for ae in &c.known_aes {
        let _ = writeln!(s, "\n[[ae]]");
        let _ = writeln!(s, "title = {}", toml_str(&ae.title));
        let _ = writeln!(s, "host = {}", toml_str(&ae.host));
        let _ = writeln!(s, "port = {}", ae.port);
    }
    s
}

fn listen_port(config: &toml::Table, table: &str) -> Option<u16> {
    let listen = config.get(table)?.get("listen")?.as_str()?;
    listen.rsplit(':').next()?.parse().ok()
}

/// The Pons daemon under test (`pons serve --config FILE`), killed on drop.
/// Its log (RUST_LOG=info unless set) goes to `log_path()`; the tail is
/// printed when a test panics while it is alive.
pub struct Pons {
    child: Option<Child>,
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    dimse_port: u16,
    web_port: Option<u16>,
    ae_title: String,
}

impl Pons {
    /// Writes `config_toml` to a temp file, starts Pons, waits (20 s) until
    /// its DIMSE port accepts TCP. Panics with the log tail otherwise.
    pub fn start(config_toml: &str) -> Pons {
        let config: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("Pons::start: config is not TOML: {e}\n{config_toml}"));
        let dimse_port =
            listen_port(&config, "dimse").expect("Pons::start: config needs [dimse] listen");
        let web_port = listen_port(&config, "web");
        let ae_title = config
            .get("dimse")
            .and_then(|d| d.get("ae_title"))
            .and_then(|v| v.as_str())
            .unwrap_or("PONS")
            .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("pons-test-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("pons.toml");
        fs::write(&config_path, config_toml).expect("write config");
        let log_path = dir.path().join("pons.log");
        let mut p = Pons {
            child: None,
            dir,
            config_path,
            log_path,
            dimse_port,
            web_port,
            ae_title,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let (out, err) = log_file(&self.log_path);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pons"));
        prepare(&mut cmd)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cmd.spawn().expect("spawn pons");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.dimse_port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "pons exited during startup ({status}); log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pons did not accept TCP on {addr} within 20 s; log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn dimse_port(&self) -> u16 {
        self.dimse_port
    }
    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }
    /// `http://127.0.0.1:PORT` of `[web] listen`, if configured.
    pub fn web_url(&self) -> Option<String> {
        self.web_port.map(|p| format!("http://127.0.0.1:{p}"))
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// A scratch directory that lives as long as this fixture (the process's
    /// working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL: a crash, no chance to flush or drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit (up to `grace`, then SIGKILL). Returns the
    /// exit status when it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        signal(&c, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts again with the same config (stops first if running: SIGTERM
    /// with 10 s grace). The log file is appended to.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(10));
        }
        self.spawn();
    }
}

impl Drop for Pons {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pons log tail ({}) ---\n{}\n---",
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `pons ARGS...` to completion (e.g. `check-config`, `echo`, `version`).
pub fn pons_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pons"));
    prepare(&mut cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pons")
}

// ---------------------------------------------------------------------------
// DCMTK
// ---------------------------------------------------------------------------

/// A DCMTK (or any) command with `TCP_NODELAY=1`, dying with its spawner.
pub fn dcmtk(tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    prepare(&mut cmd).stdin(Stdio::null());
    cmd
}

/// SOP Class UID and Transfer Syntax UID from a PS3.10 file's meta group
/// (None if the file has no "DICM" preamble or no such elements).
pub fn file_meta_uids(path: &Path) -> Option<(String, String)> {
    let mut f = fs::File::open(path).ok()?;
    let mut head = [0u8; 132];
    f.read_exact(&mut head).ok()?;
    if &head[128..132] != b"DICM" {
        return None;
    }
    // Group 0002 is explicit VR little endian; read it element by element.
    let mut buf = Vec::new();
    f.take(64 * 1024).read_to_end(&mut buf).ok()?;
    let (mut pos, mut sop_class, mut ts) = (0usize, None, None);
    while pos + 8 <= buf.len() {
        let group = u16::from_le_bytes([buf[pos], buf[pos + 1]]);
        let elem = u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]);
        if group != 0x0002 {
            break;
        }
        let vr = &buf[pos + 4..pos + 6];
        let (len, hdr) = if matches!(
            vr,
            b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR"
        ) {
            if pos + 12 > buf.len() {
                break;
            }
            let l = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().unwrap()) as usize;
            (l, 12)
        } else {
            (u16::from_le_bytes([buf[pos + 6], buf[pos + 7]]) as usize, 8)
        };
        let start = pos + hdr;
        let end = start.checked_add(len)?;
        if end > buf.len() {
            break;
        }
        let value = || {
            String::from_utf8_lossy(&buf[start..end])
                .trim_end_matches(['\0', ' '])
                .to_owned()
        };
        match elem {
            0x0002 => sop_class = Some(value()),
            0x0010 => ts = Some(value()),
            _ => {}
        }
        pos = end;
    }
    Some((sop_class?, ts?))
}

/// Expands directories (recursively, PS3.10 files only, sorted) and keeps
/// plain file arguments as given.
pub fn expand_inputs<P: AsRef<Path>>(inputs: &[P]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if file_meta_uids(&p).is_some() {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for i in inputs {
        let p = i.as_ref();
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.to_path_buf());
        }
    }
    out
}

/// The result of [`storescu`]: every storescu run's output, concatenated.
#[derive(Debug)]
pub struct StoreOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// Files handed to storescu.
    pub files: usize,
}

impl StoreOutput {
    /// Panics with storescu's output unless every run succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success,
            "storescu failed ({} files)\nstdout:\n{}\nstderr:\n{}",
            self.files, self.stdout, self.stderr
        );
        self
    }
}

/// Sends files (directories are walked recursively) with DCMTK storescu to
/// `called@127.0.0.1:port`, each file in its own transfer syntax: the helper
/// writes a storescu config (`-xf`) that proposes, for every (SOP class,
/// transfer syntax) pair found in the files, exactly that pair. (Plain
/// storescu proposes only uncompressed syntaxes and converts or fails.)
/// If `extra_args` contains its own `-x`/`--propose`/`-xf` option, no
/// config is generated. `-v` is always passed so refusals are visible.
pub fn storescu<P: AsRef<Path>>(
    calling: &str,
    called: &str,
    port: u16,
    inputs: &[P],
    extra_args: &[&str],
) -> StoreOutput {
    let files = expand_inputs(inputs);
    assert!(!files.is_empty(), "storescu: no input files");
    let own_proposal = extra_args
        .iter()
        .any(|a| a.starts_with("-x") || a.starts_with("--propose") || *a == "--config-file");
    let mut out = StoreOutput {
        success: true,
        stdout: String::new(),
        stderr: String::new(),
        files: files.len(),
    };
    let run = |cfg: Option<&Path>, batch: &[PathBuf], out: &mut StoreOutput| {
        let mut cmd = dcmtk("storescu");
        cmd.arg("-v")
            .arg("-aet")
            .arg(calling)
            .arg("-aec")
            .arg(called);
        if let Some(cfg) = cfg {
            cmd.arg("-xf").arg(cfg).arg("Default");
        }
        cmd.args(extra_args)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .args(batch);
        let o = cmd.output().expect("run storescu (is dcmtk installed?)");
        out.success &= o.status.success();
        out.stdout.push_str(&String::from_utf8_lossy(&o.stdout));
        out.stderr.push_str(&String::from_utf8_lossy(&o.stderr));
    };
    if own_proposal {
        run(None, &files, &mut out);
        return out;
    }
    // Group files into batches of at most 120 distinct (class, syntax) pairs:
    // an association carries at most 128 presentation contexts.
    // (distinct (class, syntax) pairs, files) per storescu run
    type Batch = (Vec<(String, String)>, Vec<PathBuf>);
    let mut batches: Vec<Batch> = vec![(Vec::new(), Vec::new())];
    for f in files {
        let pair = file_meta_uids(&f).unwrap_or_else(|| {
            panic!(
                "storescu helper: {} is not a PS3.10 file; use dcmtk(\"storescu\")",
                f.display()
            )
        });
        let (pairs, batch) = batches.last_mut().unwrap();
        if !pairs.contains(&pair) {
            if pairs.len() == 120 {
                batches.push((vec![pair], vec![f]));
                continue;
            }
            pairs.push(pair);
        }
        batch.push(f);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (pairs, batch)) in batches.iter().enumerate() {
        let cfg = dir.path().join(format!("storescu-{i}.cfg"));
        fs::write(&cfg, storescu_config(pairs)).expect("write storescu config");
        run(Some(&cfg), batch, &mut out);
    }
    out
}

/// A DCMTK association config proposing each (SOP class, transfer syntax)
/// pair as its own presentation context, as profile "Default".
pub fn storescu_config(pairs: &[(String, String)]) -> String {
    let syntaxes: BTreeSet<&str> = pairs.iter().map(|(_, ts)| ts.as_str()).collect();
    let syntaxes: Vec<&str> = syntaxes.into_iter().collect();
    let mut s = String::from("[[TransferSyntaxes]]\n");
    for (i, ts) in syntaxes.iter().enumerate() {
        let _ = writeln!(s, "[TS{i}]\nTransferSyntax1 = {ts}");
    }
    s.push_str("\n[[PresentationContexts]]\n[Contexts]\n");
    for (i, (class, ts)) in pairs.iter().enumerate() {
        let t = syntaxes.iter().position(|x| x == ts).unwrap();
        let _ = writeln!(s, "PresentationContext{} = {class}\\TS{t}", i + 1);
    }
    s.push_str("\n[[Profiles]]\n[Default]\nPresentationContexts = Contexts\n");
    s
}

/// `echoscu -aet calling -aec called 127.0.0.1 port extra_args...`
pub fn echoscu(calling: &str, called: &str, port: u16, extra_args: &[&str]) -> Output {
    dcmtk("echoscu")
        .arg("-aet")
        .arg(calling)
        .arg("-aec")
        .arg(called)
        .args(extra_args)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .output()
        .expect("run echoscu (is dcmtk installed?)")
}

/// A DCMTK storescp receiving into its own directory (C-MOVE destination,
/// C-STORE sink), on a free port, killed on drop. Accepts every storage SOP
/// class and any transfer syntax (`+xa`), answers any called AE.
pub struct StoreScp {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    aet: String,
}

impl StoreScp {
    pub fn start(aet: &str) -> StoreScp {
        Self::start_with_args(aet, &[])
    }

    /// Extra storescp arguments, e.g. `&["--ignore"]` for a fast sink that
    /// stores nothing.
    pub fn start_with_args(aet: &str, extra_args: &[&str]) -> StoreScp {
        let dir = tempfile::Builder::new()
            .prefix("pons-storescp-")
            .tempdir()
            .expect("tempdir");
        let out_dir = dir.path().join("in");
        fs::create_dir_all(&out_dir).expect("mkdir");
        let port = free_port();
        let (out, err) = log_file(&dir.path().join("storescp.log"));
        let child = dcmtk("storescp")
            .arg("-v")
            .arg("-aet")
            .arg(aet)
            // Accept every syntax unless the caller chose a preference.
            .args(if extra_args.iter().any(|a| a.starts_with("+x")) {
                &[][..]
            } else {
                &["+xa"][..]
            })
            .arg("-od")
            .arg(&out_dir)
            .args(extra_args)
            .arg(port.to_string())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn storescp (is dcmtk installed?)");
        let mut scp = StoreScp {
            child: Some(child),
            dir,
            port,
            aet: aet.to_owned(),
        };
        if !wait_for_port(port, Duration::from_secs(10)) {
            panic!("storescp did not listen on {port}:\n{}", scp.log_tail(20));
        }
        if let Some(Ok(Some(st))) = scp.child.as_mut().map(|c| c.try_wait()) {
            panic!("storescp exited ({st}):\n{}", scp.log_tail(20));
        }
        scp
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn aet(&self) -> &str {
        &self.aet
    }
    /// A [`Modality`] / [`KnownAe`]-ready description of this SCP.
    pub fn modality(&self) -> Modality {
        Modality::new(&self.aet, self.port)
    }
    pub fn known_ae(&self) -> KnownAe {
        KnownAe::new(&self.aet, self.port)
    }
    /// Where received files go.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("in")
    }
    /// Received files, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.out_dir())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("storescp.log"), lines)
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Data set comparison
// ---------------------------------------------------------------------------

/// Compares each (original file, received PS3.10 bytes) pair's data sets,
/// ignoring the file meta group, with `scripts/compare_dicom.py` (one python
/// run for all pairs). Err carries the script's report.
pub fn compare_datasets(pairs: &[(PathBuf, Vec<u8>)]) -> Result<(), String> {
    if pairs.is_empty() {
        return Ok(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("scripts").join("compare_dicom.py"));
    for (i, (orig, bytes)) in pairs.iter().enumerate() {
        let got = dir.path().join(format!("received-{i}.dcm"));
        fs::write(&got, bytes).expect("write received file");
        cmd.arg(orig).arg(got);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run compare_dicom.py");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Panics unless `received` holds the same data set as the file `original`.
pub fn assert_same_dataset(original: &Path, received: &[u8]) {
    if let Err(report) = compare_datasets(&[(original.to_path_buf(), received.to_vec())]) {
        panic!("data sets differ:\n{report}");
    }
}
