//! The STOW-RS client and the spool forwarder against a real Orthanc (with
//! its DICOMweb plugin), started by the shared harness.

mod common;

use common::Orthanc;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pons::web::client::{InstanceOutcome, StowItem, UpstreamClient};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    let mut orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let upstream = client(&orthanc.rest_url());
    upstream.ping().await.unwrap();

    let items = [
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.1", true),
        item(dir.path(), "1.2.826.0.1.3680043.9.7.1.1.2", true),
    ];
    let out = upstream.stow(&items).await.unwrap();
    assert_eq!(out, vec![InstanceOutcome::Stored; 2]);
    assert_eq!(orthanc.instance_count(), 2);

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
    assert_eq!(orthanc.instance_count(), 3);

    orthanc.stop();
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

    let mut orthanc = Orthanc::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = pons::jobs::open(
        &format!("sqlite://{}/jobs.db", dir.path().display()),
        "test",
    )
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
        kind: "stow".into(),
    };
    let task = tokio::spawn(pons::spool::run_forwarder(
        jobs.clone(),
        std::sync::Arc::new(client(&orthanc.rest_url())),
        cfg,
        spool.notifier(),
        shutdown.clone(),
    ));
    for _ in 0..600 {
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
    assert_eq!(orthanc.instance_count(), 2);
    let left = |d: &str| std::fs::read_dir(spool.dir().join(d)).unwrap().count();
    assert_eq!((left("ready"), left("failed"), left("incoming")), (0, 1, 0));
    orthanc.stop();
}
