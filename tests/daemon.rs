//! The daemon's own surface: CLI, C-ECHO both ways, AE policy, health routes.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn pons_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pons"))
        .args(args)
        .output()
        .expect("run pons")
}

#[test]
fn check_config_prints_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[dimse]
ae_title = "A TITLE THAT IS MUCH TOO LONG"
listen = "127.0.0.1:11112"
max_pdu = 1
[upstream]
url = "ftp://nowhere"
[jobs]
url = "memory"
"#,
    )
    .unwrap();
    let out = pons_cli(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["ae_title", "max_pdu", "upstream.url", "jobs.url"] {
        assert!(err.contains(needle), "{needle} not reported:\n{err}");
    }
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "[dimse]\nae_title = \"P\"\nlisten = \"127.0.0.1:1\"\ncolour = 1\n",
    )
    .unwrap();
    let out = pons_cli(&["check-config", unknown.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

    let good = repo_root().join("config/pons.toml");
    assert!(pons_cli(&["check-config", good.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn pons_echo_reaches_orthanc() {
    let orthanc = Orthanc::start();
    let target = format!("{}@127.0.0.1:{}", orthanc.aet(), orthanc.dicom_port());
    let out = pons_cli(&["echo", &target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Success"));

    let nobody = format!("NOBODY@127.0.0.1:{}", free_port());
    let out = pons_cli(&["echo", &nobody, "--timeout-secs", "2"]);
    assert!(!out.status.success());
}

#[test]
fn echoscu_and_the_calling_ae_allow_list() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.accept_any_calling_ae = false;
    cfg.known_aes = vec![KnownAe::new("CT01", 104)];
    let pons = Pons::start(&cfg.to_toml());
    let ok = echoscu("CT01", "PONS", pons.dimse_port(), &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stranger = echoscu("STRANGER", "PONS", pons.dimse_port(), &[]);
    assert!(!stranger.status.success());
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("Calling AE Title Not Recognized"));
}

fn get(url: &str) -> HttpResponse {
    http("GET", url, &[], b"").unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[test]
fn readyz_follows_the_upstream() {
    let mut orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let pons = Pons::start(&cfg.to_toml());
    let base = pons.web_url().unwrap();
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    let ready = get(&format!("{base}/readyz"));
    assert_eq!(ready.status, 200, "{}", ready.text());
    orthanc.stop();
    let ready = get(&format!("{base}/readyz"));
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("cannot reach upstream"),
        "{}",
        ready.text()
    );
    orthanc.restart();
    assert!(wait_until(Duration::from_secs(10), || {
        get(&format!("{base}/readyz")).status == 200
    }));
}
