//! PostgreSQL fixture: a private cluster from Debian's packages
//! (`/usr/lib/postgresql/*/bin`), on a free port of 127.0.0.1, trust auth,
//! data in a temp dir; stopped on drop. PostgreSQL refuses to run as root,
//! so when the tests run as root the cluster runs as the `postgres` user.
#![allow(unused_imports)]

use super::*;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;

pub struct Postgres {
    child: Option<Child>,
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    log_path: PathBuf,
    user: Option<(u32, u32)>,
}

/// `$PONS_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin` with a server.
pub fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PONS_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/postgres: run scripts/install-deps.sh")
}

/// The `postgres` account's uid and gid when we are root (the server will
/// not run as root), else None: run as ourselves.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer to a static passwd record,
    // read at once (tests start clusters one at a time per thread; the
    // fields copied are plain integers).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no postgres user: run scripts/install-deps.sh"
    );
    // SAFETY: pw is non-null (checked above).
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl Postgres {
    /// initdb + postgres on a free port; waits (30 s) until it accepts
    /// connections. Panics with the server log otherwise.
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("pons-pg-")
            .tempdir()
            .expect("tempdir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        }
        let log_path = dir.path().join("postgres.log");
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            bin,
            log_path,
            user,
            dir,
        };
        let data = pg.dir.path().join("data");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (stdout, stderr) = log_file(&pg.log_path);
        let mut cmd = pg.command("postgres");
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(pg.port.to_string())
            .arg("-k")
            .arg(pg.dir.path())
            // A throw-away cluster: durability buys nothing, speed does.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=200"])
            .stdout(stdout)
            .stderr(stderr);
        pg.child = Some(prepare(&mut cmd).spawn().expect("spawn postgres"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = pg.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "postgres exited during startup ({status}):\n{}",
                    tail(&pg.log_path, 30)
                );
            }
            let ready = pg
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-t", "1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return pg;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready within 30 s:\n{}",
                tail(&pg.log_path, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A program from the server's bin dir, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null()).current_dir(self.dir.path());
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Runs SQL with psql; its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "--- postgres log tail ---\n{}\n---",
                tail(&self.log_path, 20)
            );
        }
        // SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected
        // (SIGTERM would wait for them), shared memory is released.
        signal(&child, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
