//! Python peers (`scripts/*.py`): fake PACSes, origins and SCUs that do what
//! a test needs on purpose.

use super::{log_file, prepare, repo_root, tail, venv_python};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// How long [`ScriptPeer::start`] waits for "ready".
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`ScriptPeer::next_line`] waits: a peer that goes silent fails
/// the test instead of hanging it.
const LINE_TIMEOUT: Duration = Duration::from_secs(120);

/// `python scripts/{script}` with the venv python, prepared like every child
/// (dies with the spawning thread, `TCP_NODELAY=1`), stdin null. For scripts
/// that run to completion; long-lived peers are [`ScriptPeer`]s.
pub fn script_command(script: &str) -> Command {
    let mut cmd = Command::new(venv_python());
    prepare(&mut cmd)
        .arg(repo_root().join("scripts").join(script))
        .stdin(Stdio::null());
    cmd
}

/// A long-lived peer script, started with its arguments and ready once it
/// printed "ready" (so it listens). Its later stdout lines are read with
/// [`ScriptPeer::next_line`]; its stderr goes to a file whose tail is shown
/// when the test panics. Killed on drop, and by the kernel if the test binary
/// dies. Its stdin stays open as long as this lives (some scripts read it
/// to its end to know when to stop).
pub struct ScriptPeer {
    script: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    _stdin: ChildStdin,
    stderr: PathBuf,
    _dir: TempDir,
}

impl ScriptPeer {
    /// Starts `scripts/{script} ARGS...` and waits until it prints "ready".
    pub fn start(script: &str, args: &[&str]) -> ScriptPeer {
        let dir = tempfile::Builder::new()
            .prefix("pons-script-")
            .tempdir()
            .expect("tempdir");
        let stderr = dir.path().join("stderr.log");
        let (_, err) = log_file(&stderr);
        let mut child = script_command(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        // A reader thread, so that waiting for a line can time out.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = ScriptPeer {
            script: script.to_owned(),
            _stdin: child.stdin.take().expect("piped stdin"),
            child,
            lines,
            stderr,
            _dir: dir,
        };
        let first = peer.line_within(READY_TIMEOUT);
        if first != "ready" {
            peer.fail(&format!("printed {first:?} instead of \"ready\""));
        }
        peer
    }

    /// The next line the script prints, trimmed. Panics if none comes
    /// within two minutes or the script exits first.
    pub fn next_line(&mut self) -> String {
        self.line_within(LINE_TIMEOUT)
    }

    /// Every line printed so far and not yet read, without waiting.
    pub fn lines_now(&mut self) -> Vec<String> {
        self.lines.try_iter().map(|l| l.trim().to_owned()).collect()
    }

    /// The next line, which must be JSON.
    pub fn next_json(&mut self) -> Value {
        let line = self.next_line();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| self.fail(&format!("printed no JSON ({e}): {line}")))
    }

    fn line_within(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line.trim().to_owned(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.fail(&format!("printed nothing within {timeout:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string());
                self.fail(&format!(
                    "exited ({}) without printing",
                    status.unwrap_or_default()
                ))
            }
        }
    }

    /// Panics; the drop that follows shows the script's stderr.
    fn fail(&self, what: &str) -> ! {
        panic!("{} {what}", self.script)
    }
}

impl Drop for ScriptPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} stderr tail ---\n{}\n---",
                self.script,
                tail(&self.stderr, 30)
            );
        }
    }
}
