//! Hostile bytes on the DIMSE face: a command set that declares more than it
//! holds is an A-ABORT, costs no memory, and holds up no one else.

mod common;

use common::*;
use pons::dimse::client::{verification_proposal, ScuAssociation, ScuConfig};
use std::time::Duration;

/// A 74-byte C-ECHO-RQ command set whose Affected SOP Class UID declares
/// 2 GiB (Implicit VR Little Endian, as every command set).
fn poisoned_command() -> Vec<u8> {
    let mut out = Vec::new();
    let mut element = |element: u16, len: u32, value: &[u8]| {
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
    };
    element(0x0002, 0x7FFF_FFFF, b"1.2.840.10008.1.1\0");
    element(0x0100, 2, &0x0030u16.to_le_bytes());
    element(0x0110, 2, &1u16.to_le_bytes());
    element(0x0800, 2, &0x0101u16.to_le_bytes());
    out
}

/// Peak resident memory (VmHWM) of a process, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[test]
fn poisoned_command_sets_are_aborted_in_bounded_memory_while_others_store() {
    let state = tempfile::tempdir().unwrap();
    // Spool mode: a C-STORE is answered once it is on disk.
    let cfg = PonsConfig::new("http://127.0.0.1:9/unreachable", state.path());
    let pons = Pons::start(&cfg.to_toml());
    let files = testdata().ct(200).files(50);
    let store = std::thread::spawn({
        let port = pons.dimse_port();
        move || storescu("MODALITY", "PONS", port, &files, &[])
    });
    let scu = ScuConfig {
        calling_ae: "HOSTILE".into(),
        called_ae: "PONS".into(),
        address: format!("127.0.0.1:{}", pons.dimse_port()),
        max_pdu: 16384,
        timeout: Duration::from_secs(10),
        tls: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(async {
        let attacks = (0..32).map(|_| {
            let scu = scu.clone();
            tokio::spawn(async move {
                let mut a = ScuAssociation::connect(&scu, &[verification_proposal()])
                    .await
                    .expect("associated");
                let (pc, _) = a.accepted_context("1.2.840.10008.1.1").unwrap();
                a.send_raw_fragment(pc, true, true, poisoned_command())
                    .await
                    .unwrap();
                a.receive().await.map(|r| r.command)
            })
        });
        futures::future::join_all(attacks).await
    });
    for answer in answers {
        let answer = answer.unwrap();
        assert!(
            answer.is_err(),
            "a poisoned command was answered: {answer:?}"
        );
    }
    store.join().unwrap().assert_success();
    let peak = peak_rss_mb(pons.pid().unwrap());
    assert!(peak < 100.0, "Pons peaked at {peak:.0} MB");
    assert!(pons.log().contains("command"), "{}", pons.log());
}

/// An A-ASSOCIATE-RQ proposing Verification, as bytes.
fn associate_rq() -> Vec<u8> {
    use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SLOW".into(),
        called_ae_title: "PONS".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::pdu::write_pdu(&mut bytes, &rq).unwrap();
    bytes
}

/// Sends `bytes` one every 500 ms; returns how long until Pons closed the
/// connection and the last PDU type it sent (0x07 is A-ABORT).
fn trickle(port: u16, first: &[u8], bytes: &[u8]) -> (Duration, Option<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(first).unwrap();
    if !first.is_empty() {
        // The A-ASSOCIATE-AC (or RJ).
        let mut head = [0u8; 6];
        s.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 0x02, "not accepted");
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        s.read_exact(&mut vec![0u8; len]).unwrap();
    }
    let started = std::time::Instant::now();
    let reader = s.try_clone().unwrap();
    let closed = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = (&reader).read_to_end(&mut got);
        (started.elapsed(), got.first().copied())
    });
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        if closed.is_finished() {
            break;
        }
    }
    closed.join().unwrap()
}

#[test]
fn slow_association_requests_and_slow_pdus_are_cut_off_while_others_echo() {
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new("http://127.0.0.1:9/unreachable", state.path());
    let pons = Pons::start(&set_numbers(
        &cfg.to_toml(),
        "dimse",
        &[("association_timeout_secs", 2), ("idle_timeout_secs", 3)],
    ));
    let port = pons.dimse_port();
    let echo = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        echoscu("MODALITY", "PONS", port, &[])
    });
    // An A-ASSOCIATE-RQ a byte at a time: the connection is closed (ARTIM).
    let (held, _) = trickle(port, &[], &associate_rq());
    assert!(held < Duration::from_secs(6), "held {held:?}");
    assert!(echo.join().unwrap().status.success());

    // A P-DATA-TF declaring 100 bytes, sent a byte at a time: A-ABORT once
    // the PDU has taken idle_timeout_secs.
    let mut pdata = vec![0x04, 0, 0, 0, 0, 100];
    pdata.extend(std::iter::repeat_n(0u8, 100));
    let echo = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        echoscu("MODALITY", "PONS", port, &[])
    });
    let (held, last) = trickle(port, &associate_rq(), &pdata);
    assert!(held < Duration::from_secs(8), "held {held:?}");
    assert_eq!(last, Some(0x07), "no A-ABORT");
    assert!(echo.join().unwrap().status.success());
}

#[test]
fn a_panicking_handler_aborts_its_own_association_only() {
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new("http://127.0.0.1:9/unreachable", state.path());
    let mut pons = Pons::start(&cfg.to_toml());
    let port = pons.dimse_port();

    // A C-FIND whose handler panics (a hook compiled only into test builds).
    let find = dcmtk("findscu")
        // A DIMSE timeout: an unanswered request fails the test, not hangs it.
        .args(["-v", "-S", "-td", "30", "-aet", "MODALITY", "-aec", "PONS"])
        .args([
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=PONS-TEST-PANIC",
        ])
        .args(["127.0.0.1", &port.to_string()])
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&find.stdout),
        String::from_utf8_lossy(&find.stderr)
    );
    assert!(log.contains("Abort"), "{log}");

    // A C-STORE whose association task panics.
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("panic.dcm");
    std::fs::copy(&testdata().ct(100).files(1)[0], &victim).unwrap();
    let modified = dcmtk("dcmodify")
        .args(["-nb", "-m"])
        .arg(format!("(0008,0018)={}", pons::test_hooks::PANIC_UID))
        .arg(&victim)
        .output()
        .unwrap();
    assert!(modified.status.success(), "{modified:?}");
    let stored = storescu("MODALITY", "PONS", port, &[&victim], &[]);
    let out = format!("{}{}", stored.stdout, stored.stderr);
    assert!(out.contains("Abort"), "{out}");

    // Pons lives on and serves others.
    assert!(pons.is_running());
    let log = pons.log();
    assert!(log.contains("request handler panicked"), "{log}");
    assert!(log.contains("association task panicked"), "{log}");
    storescu("MODALITY", "PONS", port, &testdata().ct(100).files(5), &[]).assert_success();
    assert!(echoscu("MODALITY", "PONS", port, &[]).status.success());
}
