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
