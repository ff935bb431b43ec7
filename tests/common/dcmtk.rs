//! DCMTK tools and data set comparison.
#![allow(unused_imports)]

use super::*;
use dicom_object::InMemDicomObject;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
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

/// `findscu -S` at STUDY level from `calling` to PONS on `port`, asking for
/// Study Instance UID `study` (all studies when empty).
pub fn findscu_study(calling: &str, port: u16, study: &str) -> Output {
    dcmtk("findscu")
        .args(["-S", "-aet", calling, "-aec", "PONS"])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
        .arg(format!("StudyInstanceUID={study}"))
        .arg("127.0.0.1")
        .arg(port.to_string())
        .output()
        .expect("run findscu (is dcmtk installed?)")
}

/// What a findscu run answered: its matches (written by `-X`) and its log.
pub struct FindResult {
    pub matches: Vec<InMemDicomObject>,
    pub log: String,
}

/// findscu from MODALITY to `called` on `port` with `args` (`-S`, `-W`,
/// `-d`…) and `-k` keys (raw bytes, for values in another character set).
pub fn findscu_extract(called: &str, port: u16, args: &[&str], keys: &[OsString]) -> FindResult {
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = dcmtk("findscu");
    cmd.args(["-aet", "MODALITY", "-aec", called, "-X", "-od"])
        .arg(out_dir.path())
        .args(args);
    for k in keys {
        cmd.arg("-k").arg(k);
    }
    cmd.arg("127.0.0.1").arg(port.to_string());
    let out = cmd.output().expect("run findscu (is dcmtk installed?)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<_> = fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let matches = names
        .iter()
        .map(|p| {
            dicom_object::open_file(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .into_inner()
        })
        .collect();
    FindResult { matches, log }
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
