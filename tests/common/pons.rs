//! The Pons daemon under test and its config.
#![allow(unused_imports)]

use super::*;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

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
    /// Direction B: `[[pacs]]` entries, the first the default.
    pub pacs: Vec<PacsEntry>,
    /// `web.cors_origins`
    pub cors_origins: Vec<String>,
}

/// A `[[pacs]]` entry: a DIMSE PACS behind our DICOMweb face.
#[derive(Debug, Clone)]
pub struct PacsEntry {
    pub name: String,
    pub ae_title: String,
    pub port: u16,
    /// "c-get" or "c-move"
    pub retrieve: String,
}

impl PacsEntry {
    pub fn new(name: &str, ae_title: &str, port: u16) -> Self {
        PacsEntry {
            name: name.to_owned(),
            ae_title: ae_title.to_owned(),
            port,
            retrieve: "c-get".to_owned(),
        }
    }
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
            pacs: Vec::new(),
            cors_origins: Vec::new(),
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
    let origins: Vec<String> = c.cors_origins.iter().map(|o| toml_str(o)).collect();
    let _ = writeln!(s, "cors_origins = [{}]", origins.join(", "));
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
    if !c.pacs.is_empty() {
        let _ = writeln!(s, "\n[cache]");
        let cache = c.spool_dir.with_file_name("cache");
        let _ = writeln!(s, "dir = {}", toml_str(&cache.to_string_lossy()));
    }
    for p in &c.pacs {
        let _ = writeln!(s, "\n[[pacs]]");
        let _ = writeln!(s, "name = {}", toml_str(&p.name));
        let _ = writeln!(s, "ae_title = {}", toml_str(&p.ae_title));
        let _ = writeln!(s, "host = \"127.0.0.1\"");
        let _ = writeln!(s, "port = {}", p.port);
        let _ = writeln!(s, "retrieve = {}", toml_str(&p.retrieve));
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
        // Both faces: the web listener may bind a moment after the DIMSE one.
        let ports = [Some(self.dimse_port), self.web_port];
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in ports
            .into_iter()
            .flatten()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        {
            self.wait_accepting(&mut child, addr, deadline);
        }
        self.child = Some(child);
    }

    fn wait_accepting(&self, child: &mut std::process::Child, addr: SocketAddr, deadline: Instant) {
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

/// `config_toml` with numeric keys set in `table` ("dimse", "web.limits", …),
/// which is created when missing.
pub fn set_numbers(config_toml: &str, table: &str, pairs: &[(&str, i64)]) -> String {
    let mut config: toml::Table = config_toml.parse().expect("config is TOML");
    let mut t = &mut config;
    for name in table.split('.') {
        t = t
            .entry(name)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("a table");
    }
    for (key, value) in pairs {
        t.insert((*key).to_owned(), toml::Value::Integer(*value));
    }
    toml::to_string(&config).unwrap()
}
