//! The STOW-RS client against a real Orthanc (with its DICOMweb plugin),
//! started by the test itself in a temporary directory. Skipped (with a
//! note) on machines without Orthanc.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pons::web::client::{InstanceOutcome, StowItem, UpstreamClient};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ORTHANC: &str = "/usr/sbin/Orthanc";
const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Orthanc {
    child: tokio::process::Child,
    http: String,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    async fn start() -> Option<Orthanc> {
        // scripts/test.sh installs both; a missing peer is a failure, not a skip.
        assert!(
            Path::new(ORTHANC).exists() && Path::new(PLUGIN).exists(),
            "Orthanc or its DICOMweb plugin is not installed: run scripts/install-deps.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let (http_port, dicom_port) = (free_port(), free_port());
        let storage = dir.path().join("db");
        let cfg = serde_json::json!({
            "Name": "t",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [PLUGIN],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
        });
        let cfg_path = dir.path().join("orthanc.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
        let child = tokio::process::Command::new(ORTHANC)
            .arg(&cfg_path)
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let o = Orthanc {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/system", o.http)).send().await {
                if r.status().is_success() {
                    return Some(o);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Orthanc did not answer /system within 20 s");
    }

    async fn instances(&self) -> Vec<String> {
        let body = reqwest::get(format!("{}/instances", self.http))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

/// A small valid CT image (16x16, 16 bits), Explicit VR Little Endian.
fn write_ct(path: &Path, instance_uid: &str, with_study: bool) {
    let mut obj = InMemDicomObject::new_empty();
    let s = |v: &str| PrimitiveValue::from(v);
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        s(uids::CT_IMAGE_STORAGE),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        s(instance_uid),
    ));
    obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, s("PONS-TEST")));
    if with_study {
        obj.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            s("1.2.826.0.1.3680043.9.7.1"),
        ));
    }
    obj.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        s("1.2.826.0.1.3680043.9.7.1.1"),
    ));
    obj.put(DataElement::new(tags::MODALITY, VR::CS, s("CT")));
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, 16),
        (tags::COLUMNS, 16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        s("MONOCHROME2"),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16((0..256u16).collect()),
    ));
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

fn item(dir: &Path, uid: &str, with_study: bool) -> StowItem {
    let path: PathBuf = dir.join(format!("{uid}.dcm"));
    write_ct(&path, uid, with_study);
    StowItem {
        path,
        sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
        sop_instance_uid: uid.into(),
    }
}

fn client(base: &str) -> UpstreamClient {
    let cfg: pons::config::UpstreamConfig = toml::from_str(&format!(
        "url = \"{base}/dicom-web/\"\nrequest_timeout_secs = 30"
    ))
    .unwrap();
    UpstreamClient::new(&cfg).unwrap()
}

#[tokio::test]
async fn stow_to_orthanc() {
    let Some(mut orthanc) = Orthanc::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let upstream = client(&orthanc.http);
    upstream.ping().await.unwrap();

    let items = [
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.1", true),
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.2", true),
    ];
    let out = upstream.stow(&items).await.unwrap();
    assert_eq!(out, vec![InstanceOutcome::Stored; 2]);
    assert_eq!(orthanc.instances().await.len(), 2);

    // Orthanc refuses an instance without Study Instance UID (HTTP 400 with
    // Failure Reason 0xC000 in 1.10); the good one in the same request must
    // still be reported stored.
    let mixed = [
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.3", true),
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.4", false),
    ];
    let out = upstream.stow(&mixed).await.unwrap();
    assert_eq!(out[0], InstanceOutcome::Stored, "{out:?}");
    assert!(matches!(out[1], InstanceOutcome::Failed(_)), "{out:?}");
    assert_eq!(orthanc.instances().await.len(), 3);

    orthanc.child.kill().await.unwrap();
    // Upstream gone: a transient connection error.
    let err = upstream.stow(&items[..1]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(err, pons::web::client::UpstreamError::Connect { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn spool_forwards_to_orthanc() {
    use pons::jobs::{JobState, KIND_STOW};
    use pons::spool::{ForwarderConfig, InstanceMeta, Spool};

    let Some(mut orthanc) = Orthanc::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jobs = pons::jobs::open(&format!("sqlite://{}/jobs.db", dir.path().display()))
        .await
        .unwrap();
    let spool = Spool::open(&dir.path().join("spool"), jobs.clone())
        .await
        .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (n, good) in [(1, true), (2, false), (3, true)] {
        let it = item(&src, &format!("1.2.826.0.1.3680043.9.7.2.{n}"), good);
        let mut f = spool.create_incoming().await.unwrap();
        f.write(&std::fs::read(&it.path).unwrap()).await.unwrap();
        let meta = InstanceMeta {
            sop_class_uid: it.sop_class_uid,
            sop_instance_uid: it.sop_instance_uid,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            calling_ae: "CT01".into(),
        };
        spool.commit(f, &meta).await.unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cfg = ForwarderConfig {
        batch: 10,
        concurrency: 2,
        retry_max: Duration::from_secs(5),
        lease: Duration::from_secs(60),
        failed_dir: spool.failed_dir(),
    };
    let task = tokio::spawn(pons::spool::run_forwarder(
        jobs.clone(),
        std::sync::Arc::new(client(&orthanc.http)),
        cfg,
        spool.notifier(),
        shutdown.clone(),
    ));
    for _ in 0..100 {
        if jobs.count(KIND_STOW, JobState::Done).await.unwrap() == 2
            && jobs.count(KIND_STOW, JobState::Failed).await.unwrap() == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(jobs.count(KIND_STOW, JobState::Done).await.unwrap(), 2);
    let failed = jobs
        .list(Some(KIND_STOW), Some(JobState::Failed), 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("Failure Reason"));
    assert_eq!(orthanc.instances().await.len(), 2);
    let left = |d: &str| std::fs::read_dir(spool.dir().join(d)).unwrap().count();
    assert_eq!((left("ready"), left("failed"), left("incoming")), (0, 1, 0));
    orthanc.child.kill().await.unwrap(); // kills and reaps
}
