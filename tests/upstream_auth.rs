//! Authenticating to the DICOMweb origin with tokens that expire: OAuth2
//! client credentials and a Google service account, against a local token
//! endpoint that also guards Orthanc (scripts/token_gate.py): a real origin
//! behind a scripted gate, since Orthanc checks no tokens.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

struct Gate {
    _peer: ScriptPeer,
    port: u16,
}

impl Gate {
    fn start(orthanc: &Orthanc, secret: &str, lifetime_secs: u32) -> Gate {
        let port = free_port();
        let peer = ScriptPeer::start(
            "token_gate.py",
            &[
                &port.to_string(),
                &orthanc.rest_url(),
                secret,
                &lifetime_secs.to_string(),
            ],
        );
        Gate { _peer: peer, port }
    }
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn stats(&self) -> Value {
        http("GET", &self.url("/stats"), &[], b"").unwrap().json()
    }
    fn count(&self, what: &str) -> u64 {
        self.stats()[what].as_u64().unwrap()
    }
}

fn pons_with_auth(gate: &Gate, state: &Path, auth: &str) -> Pons {
    let cfg = PonsConfig::new(&gate.url("/dicom-web"), state);
    let toml = cfg
        .to_toml()
        .replace("[upstream]\n", &format!("[upstream]\nauth = {auth}\n"));
    let toml = set_numbers(&toml, "spool", &[("retry_max_secs", 1)]);
    Pons::start(&toml)
}

fn oauth2(gate: &Gate, secret_file: &Path) -> String {
    format!(
        "{{ kind = \"oauth2\", token_url = \"{}\", client_id = \"pons\", client_secret_file = {:?}, scope = \"dicom.read dicom.write\", audience = \"https://archive.example.org\" }}",
        gate.url("/token"),
        secret_file.display().to_string()
    )
}

#[test]
fn oauth2_tokens_are_renewed_before_expiry_and_after_a_401_nothing_is_lost() {
    let orthanc = Orthanc::start();
    // 8 s tokens: renewed 2 s before expiry, which leaves a loaded machine
    // 6 s for the first batch on one token.
    let gate = Gate::start(&orthanc, "right-secret", 8);
    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("client_secret");
    std::fs::write(&secret, "right-secret\n").unwrap();
    let pons = pons_with_auth(&gate, state.path(), &oauth2(&gate, &secret));
    let files = testdata().ct(12).files(12);

    storescu("MODALITY", "PONS", pons.dimse_port(), &files[..3], &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(3, Duration::from_secs(20)), 3);
    assert_eq!(gate.count("issued"), 1, "one token for the whole batch");

    // The token's 8 s run out: Pons fetches the next before using an expired one.
    std::thread::sleep(Duration::from_secs(8));
    storescu("MODALITY", "PONS", pons.dimse_port(), &files[3..6], &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(6, Duration::from_secs(20)), 6);
    assert_eq!(gate.count("issued"), 2);
    assert_eq!(gate.count("unauthorized"), 0, "an expired token was sent");

    // The archive revokes every token in the middle of the drain: the STOW
    // that meets the 401 is sent again with a new token; nothing is lost.
    http("POST", &gate.url("/revoke"), &[], b"").unwrap();
    storescu("MODALITY", "PONS", pons.dimse_port(), &files[6..], &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(12, Duration::from_secs(30)), 12);
    let expected: std::collections::BTreeSet<String> =
        files.iter().map(|f| file_uids(f).2).collect();
    assert_eq!(orthanc.instance_uids(), expected);
    assert!(gate.count("unauthorized") >= 1);
    let jobs = pons_cli(&[
        "jobs",
        "--config",
        pons.config_path().to_str().unwrap(),
        "--state",
        "failed",
    ]);
    assert!(
        !String::from_utf8_lossy(&jobs.stdout).contains("stow"),
        "failed jobs: {}",
        String::from_utf8_lossy(&jobs.stdout)
    );

    // A C-FIND (a GET, which can be asked again) after another revocation:
    // one 401, one new token, one answer.
    http("POST", &gate.url("/revoke"), &[], b"").unwrap();
    let issued = gate.count("issued");
    let find = findscu_study("MODALITY", pons.dimse_port(), "");
    assert!(
        find.status.success(),
        "{}",
        String::from_utf8_lossy(&find.stderr)
    );
    assert_eq!(gate.count("issued"), issued + 1);
    assert!(!pons.log().contains("right-secret"));
}

#[test]
fn a_wrong_client_secret_backs_off_and_readyz_says_why() {
    let orthanc = Orthanc::start();
    let gate = Gate::start(&orthanc, "right-secret", 60);
    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("client_secret");
    std::fs::write(&secret, "wrong-secret").unwrap();
    let pons = pons_with_auth(&gate, state.path(), &oauth2(&gate, &secret));
    let files = testdata().ct(2).files(2);
    // Spooled and acknowledged; not forwarded, not failed.
    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(orthanc.instance_count(), 0);
    let ready = http(
        "GET",
        &format!("{}/readyz", pons.web_url().unwrap()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(ready.status, 503);
    let why = ready.json()["upstream"].as_str().unwrap().to_owned();
    assert!(
        why.contains("invalid_client") && why.contains("/token"),
        "{why}"
    );
    let refused = gate.count("refused");
    assert!(
        (1..10).contains(&refused),
        "{refused} token requests in 3 s: no back-off"
    );
    assert!(!pons.log().contains("wrong-secret"));
    assert!(!ready.text().contains("wrong-secret"));
}

#[test]
fn a_google_service_account_signs_its_own_grant() {
    let orthanc = Orthanc::start();
    let gate = Gate::start(&orthanc, "unused", 60);
    let state = tempfile::tempdir().unwrap();
    let key = state.path().join("sa.key");
    common::certs::write_rsa_key(&key);
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": "hospital-imaging",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "client_email": "pons@hospital-imaging.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": gate.url("/token"),
    });
    let account_file = state.path().join("sa.json");
    std::fs::write(&account_file, account.to_string()).unwrap();
    let auth = format!(
        "{{ kind = \"google\", service_account_file = {:?} }}",
        account_file.display().to_string()
    );
    let pons = pons_with_auth(&gate, state.path(), &auth);
    let files = testdata().ct(2).files(2);
    storescu("MODALITY", "PONS", pons.dimse_port(), &files, &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(2, Duration::from_secs(20)), 2);
    let assertions = gate.stats()["assertions"].clone();
    let claims = &assertions[0];
    assert_eq!(
        claims["iss"],
        "pons@hospital-imaging.iam.gserviceaccount.com"
    );
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-healthcare"
    );
    assert_eq!(claims["aud"], gate.url("/token"));
}
