//! The DIMSE listener against DCMTK's echoscu/storescu, with a recording
//! handler in place of a direction: association policy, C-ECHO, byte-exact
//! C-STORE streaming, and the broken transfers a real peer rarely produces
//! (sent by our own SCU on purpose).

mod common;

use common::wait_until;

use async_trait::async_trait;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pons::dicom::scan::DatasetScanner;
use pons::dimse::client::{Proposal, ScuAssociation, ScuConfig};
use pons::dimse::handler::{AssociationInfo, Refusal, ScpHandler, StoreOutcome, StoreSink};
use pons::dimse::listener::{serve, ListenerConfig};
use pons::dimse::message::Command;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CT: &str = uids::CT_IMAGE_STORAGE;

#[derive(Default)]
struct Recorded {
    stored: Vec<(String, Vec<u8>)>,
    aborted: usize,
}

struct Recorder(Arc<Mutex<Recorded>>);

struct RecordingSink {
    uid: String,
    ts: String,
    bytes: Vec<u8>,
    log: Arc<Mutex<Recorded>>,
}

#[async_trait]
impl ScpHandler for Recorder {
    async fn begin_store(
        &self,
        _assoc: &AssociationInfo,
        rq: &Command,
        ts: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        Ok(Box::new(RecordingSink {
            uid: rq.sop_instance_uid.clone().unwrap_or_default(),
            ts: ts.to_owned(),
            bytes: Vec::new(),
            log: self.0.clone(),
        }))
    }
}

#[async_trait]
impl StoreSink for RecordingSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> StoreOutcome {
        // Same check as the real sink: truncated or mismatched data sets fail.
        let mut scan = DatasetScanner::new(&self.ts).unwrap();
        scan.feed(&self.bytes);
        let status = match scan.finish() {
            Err(_) => 0xC000,
            Ok(r) if r.sop_instance_uid.as_deref() != Some(self.uid.as_str()) => 0xA900,
            Ok(_) => 0,
        };
        if status == 0 {
            self.log.lock().unwrap().stored.push((self.uid, self.bytes));
        }
        StoreOutcome {
            status,
            comment: None,
        }
    }
    async fn abort(self: Box<Self>) {
        self.log.lock().unwrap().aborted += 1;
    }
}

struct Scp {
    port: u16,
    log: Arc<Mutex<Recorded>>,
    stop: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

impl Drop for Scp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start_scp(max_associations: usize) -> Scp {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Recorded::default()));
    let stop = CancellationToken::new();
    let config = ListenerConfig {
        called_titles: Default::default(),
        ae_title: "PONS".into(),
        known_callers: ["MODALITY".to_owned()].into(),
        accept_any_caller: false,
        max_associations,
        max_pdu: 16384,
        association_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        certificate_names: Default::default(),
    };
    rt.spawn(serve(
        listener,
        None,
        config,
        Arc::new(Recorder(log.clone())),
        stop.clone(),
    ));
    Scp {
        port,
        log,
        stop,
        _rt: rt,
    }
}

fn ct_file(dir: &Path, uid: &str, pixels: usize) -> PathBuf {
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT)),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(uid)),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("P1")),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(vec![0x1234u16; pixels].into()),
        ),
    ]);
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(CT)
        .media_storage_sop_instance_uid(uid)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid("1.2.3.4")
        .build()
        .unwrap();
    let path = dir.join(format!("{uid}.dcm"));
    obj.with_exact_meta(meta).write_to_file(&path).unwrap();
    path
}

/// The data set bytes of a PS3.10 file: everything after the meta group.
fn data_set_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_len..].to_vec()
}

fn dcmtk(tool: &str, args: &[&str]) -> std::process::Output {
    common::dcmtk(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} not runnable ({e}); run scripts/install-deps.sh"))
}

#[test]
fn echoscu_gets_success_and_strangers_are_rejected() {
    let scp = start_scp(8);
    let port = scp.port.to_string();
    let ok = dcmtk(
        "echoscu",
        &["-aet", "MODALITY", "-aec", "PONS", "127.0.0.1", &port],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let stranger = dcmtk(
        "echoscu",
        &["-aet", "STRANGER", "-aec", "PONS", "127.0.0.1", &port],
    );
    assert!(!stranger.status.success());
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(err.contains("Calling AE Title Not Recognized"), "{err}");

    let wrong_called = dcmtk(
        "echoscu",
        &["-aet", "MODALITY", "-aec", "OTHER", "127.0.0.1", &port],
    );
    assert!(!wrong_called.status.success());
    let err = String::from_utf8_lossy(&wrong_called.stderr);
    assert!(err.contains("Called AE Title Not Recognized"), "{err}");
}

#[test]
fn storescu_data_sets_arrive_byte_for_byte() {
    let scp = start_scp(8);
    let dir = tempfile::tempdir().unwrap();
    // Larger than several 16 KiB PDUs, and one tiny.
    let big = ct_file(dir.path(), "1.2.826.0.1.3680043.10.1.1", 300_000);
    let small = ct_file(dir.path(), "1.2.826.0.1.3680043.10.1.2", 4);
    let port = scp.port.to_string();
    let out = dcmtk(
        "storescu",
        &[
            "-aet",
            "MODALITY",
            "-aec",
            "PONS",
            "--max-pdu",
            "16384",
            "127.0.0.1",
            &port,
            big.to_str().unwrap(),
            small.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = scp.log.lock().unwrap();
    assert_eq!(log.stored.len(), 2);
    assert_eq!(log.stored[0].0, "1.2.826.0.1.3680043.10.1.1");
    assert_eq!(log.stored[0].1, data_set_bytes(&big));
    assert_eq!(log.stored[1].1, data_set_bytes(&small));
}

fn scu_config(port: u16) -> ScuConfig {
    ScuConfig {
        calling_ae: "MODALITY".into(),
        called_ae: "PONS".into(),
        address: format!("127.0.0.1:{port}"),
        max_pdu: 16384,
        timeout: Duration::from_secs(5),
        tls: None,
    }
}

fn ct_proposal() -> Proposal {
    Proposal {
        abstract_syntax: CT.into(),
        transfer_syntaxes: vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.into()],
    }
}

#[test]
fn broken_transfers_are_never_stored() {
    let scp = start_scp(8);
    let dir = tempfile::tempdir().unwrap();
    let file = ct_file(dir.path(), "1.2.826.0.1.3680043.10.1.3", 1000);
    let data = data_set_bytes(&file);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 1. Truncated: the last fragment flag comes too early.
        let mut a = ScuAssociation::connect(&scu_config(scp.port), &[ct_proposal()])
            .await
            .unwrap();
        let (pc, _) = a.accepted_context(CT).unwrap();
        let rq = Command::c_store_rq(1, CT, "1.2.826.0.1.3680043.10.1.3");
        a.send(pc, &rq, Some(&data[..data.len() / 2]))
            .await
            .unwrap();
        let rsp = a.receive().await.unwrap();
        assert_eq!(rsp.command.status, Some(0xC000));

        // 2. The data set's SOP Instance UID differs from the command's.
        let rq = Command::c_store_rq(2, CT, "1.2.826.0.1.3680043.10.1.999");
        a.send(pc, &rq, Some(&data)).await.unwrap();
        let rsp = a.receive().await.unwrap();
        assert_eq!(rsp.command.status, Some(0xA900));

        // 3. Aborted mid-transfer.
        let rq = Command::c_store_rq(3, CT, "1.2.826.0.1.3680043.10.1.3");
        a.send(pc, &rq, None).await.unwrap();
        a.send_raw_fragment(pc, false, false, data[..100].to_vec())
            .await
            .unwrap();
        a.abort().await.unwrap();
    });
    // The abort is processed asynchronously by the listener.
    wait_until(Duration::from_secs(10), || {
        scp.log.lock().unwrap().aborted == 1
    });
    let log = scp.log.lock().unwrap();
    assert!(log.stored.is_empty(), "nothing may be stored");
    assert_eq!(log.aborted, 1);
}

#[test]
fn associations_beyond_the_limit_get_a_transient_rejection() {
    let scp = start_scp(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let first = ScuAssociation::connect(&scu_config(scp.port), &[ct_proposal()])
            .await
            .unwrap();
        let second = ScuAssociation::connect(&scu_config(scp.port), &[ct_proposal()]).await;
        let err = second
            .err()
            .expect("second association must be rejected")
            .to_string();
        assert!(err.to_lowercase().contains("reject"), "{err}");
        first.release().await.unwrap();
    });
    // The slot is free again once the first association is gone.
    let port = scp.port.to_string();
    assert!(wait_until(Duration::from_secs(10), || dcmtk(
        "echoscu",
        &["-aet", "MODALITY", "-aec", "PONS", "127.0.0.1", &port],
    )
    .status
    .success()));
}
