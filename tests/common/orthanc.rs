//! Orthanc fixture: a private DICOMweb origin and DIMSE PACS.
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

    /// Removes an instance's file behind Orthanc's back (its index still
    /// lists it): an archive that announces what it cannot deliver.
    pub fn lose_file(&self, sop_uid: &str) {
        let id = self
            .instance_id(sop_uid)
            .unwrap_or_else(|| panic!("Orthanc has no instance {sop_uid}"));
        let info = self.get_json(&format!("/instances/{id}/attachments/dicom/info"));
        let uuid = info["Uuid"].as_str().expect("attachment uuid");
        let path = self
            .dir
            .path()
            .join("storage")
            .join(&uuid[..2])
            .join(&uuid[2..4])
            .join(uuid);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
