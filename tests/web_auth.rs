//! Who may use the DICOMweb face: OIDC access tokens checked against a JWKS
//! served at test time (python's http.server), with Orthanc as the PACS
//! behind Pons and dicomweb-client as one of the callers.

mod common;

use base64::Engine;
use common::multipart::dicom_body;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.example.org/realms/hospital";
const AUDIENCE: &str = "pons";

/// An RSA key made with openssl, and its public half as a JWK.
struct Key {
    pem: Vec<u8>,
    jwk: Value,
}

fn rsa_key(dir: &Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    common::certs::write_rsa_key(&path);
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().strip_prefix("Modulus=").unwrap();
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Key {
        pem: std::fs::read(&path).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64.encode(n), "e": "AQAB"}),
    }
}

/// Serves `dir` over HTTP (the issuer's JWKS lives there); killed on drop.
struct FileServer(Child, u16);

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for_port(port, Duration::from_secs(10)));
        FileServer(child, port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish(dir: &Path, keys: &[&Key]) {
    let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let tmp = dir.join("jwks.tmp");
    std::fs::write(&tmp, set.to_string()).unwrap();
    std::fs::rename(tmp, dir.join("jwks.json")).unwrap();
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(key: &Key, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key.jwk["kid"].as_str().map(str::to_owned);
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&key.pem).unwrap(),
    )
    .unwrap()
}

fn claims(scope: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-viewer", "scope": scope,
           "iat": now(), "nbf": now() - 5, "exp": now() + 300})
}

fn get(url: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http("GET", url, &headers, b"").unwrap()
}

#[test]
fn oidc_tokens_decide_who_reads_stores_and_administers() {
    let orthanc = Orthanc::start();
    let instances = testdata().ct(2).instances;
    storescu(
        "LOADER",
        orthanc.aet(),
        orthanc.dicom_port(),
        &[&instances[0].path],
        &[],
    )
    .assert_success();
    let keys_dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (
        rsa_key(keys_dir.path(), "k1"),
        rsa_key(keys_dir.path(), "k2"),
    );
    publish(keys_dir.path(), &[&k1]);
    let jwks = FileServer::start(keys_dir.path());

    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let mut toml = cfg.to_toml();
    toml.push_str(&format!(
        "\n[web.auth]\nkind = \"jwt\"\njwks_url = \"http://127.0.0.1:{}/jwks.json\"\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         [web.auth.permissions]\nread = [\"dicom.read\"]\nwrite = [\"dicom.write\"]\n",
        jwks.1
    ));
    let pons = Pons::start(&toml);
    let base = pons.web_url().unwrap();
    let studies = format!("{base}/dicom-web/studies");
    let reader = token(&k1, claims("openid dicom.read"));

    // No token: 401 with a challenge; the probes stay open.
    let none = get(&studies, None);
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="pons""#)
    );
    assert_eq!(get(&format!("{base}/healthz"), None).status, 200);

    // A valid token reads; the answer is the PACS's.
    let found = get(&studies, Some(&reader));
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json().as_array().unwrap().len(), 1);

    // Expired, wrong audience, wrong issuer, a bad signature, alg none.
    let mut expired = claims("dicom.read");
    expired["exp"] = json!(now() - 600);
    let mut elsewhere = claims("dicom.read");
    elsewhere["aud"] = json!("another-app");
    let mut foreign = claims("dicom.read");
    foreign["iss"] = json!("https://evil.example.org");
    let mut forged = token(&k1, claims("dicom.read"));
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("dicom.read").to_string())
    );
    for (bad, why) in [
        (token(&k1, expired), "expired"),
        (token(&k1, elsewhere), "audience"),
        (token(&k1, foreign), "issuer"),
        (forged, "signature"),
        (unsigned, "JWT"),
    ] {
        let rsp = get(&studies, Some(&bad));
        assert_eq!(rsp.status, 401, "{why}: {}", rsp.text());
        let challenge = rsp.header("www-authenticate").unwrap();
        assert!(challenge.contains("invalid_token"), "{why}: {challenge}");
        assert!(rsp.text().contains(why), "{why}: {}", rsp.text());
    }

    // A read-only token may not store: 403, and nothing reaches the PACS.
    let boundary = "auth-test";
    let body = dicom_body(boundary, &[std::fs::read(&instances[1].path).unwrap()]);
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let stow = |token: &str| {
        let auth = format!("Bearer {token}");
        http(
            "POST",
            &studies,
            &[("Authorization", &auth), ("Content-Type", &content_type)],
            &body,
        )
        .unwrap()
    };
    let refused = stow(&reader);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("'write' permission"),
        "{}",
        refused.text()
    );
    assert!(!orthanc.instance_uids().contains(&instances[1].sop_instance));
    assert_eq!(get(&format!("{base}/jobs"), Some(&reader)).status, 403);

    // The issuer rotates its key: a token from the new kid fetches the set
    // again (after the few seconds between fetches) and is accepted.
    publish(keys_dir.path(), &[&k2]);
    std::thread::sleep(Duration::from_millis(2100));
    let writer = token(&k2, claims("dicom.read dicom.write admin"));
    let stored = stow(&writer);
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert!(orthanc.instance_uids().contains(&instances[1].sop_instance));
    assert_eq!(get(&format!("{base}/jobs"), Some(&writer)).status, 200);
    // The old key is gone from the set: its tokens no longer pass.
    std::thread::sleep(Duration::from_millis(2100));
    let stale = get(&studies, Some(&token(&k1, claims("dicom.read"))));
    assert_eq!(stale.status, 401, "{}", stale.text());

    // A browser's preflight carries no token and may send Authorization.
    let preflight = http(
        "OPTIONS",
        &studies,
        &[
            ("Origin", "https://viewer.example.org"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(preflight.status, 200, "{:?}", preflight.headers);
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("authorization")
    );

    // dicomweb-client with a bearer token.
    let out = script_command("qido_client.py")
        .arg(format!("{base}/dicom-web"))
        .arg(r#"[{"op": "studies"}]"#)
        .env("DICOMWEB_BEARER", &writer)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let studies: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(studies.as_array().map(Vec::len), Some(1), "{stdout}");

    // Tokens are never logged.
    assert!(!pons.log().contains(&writer[writer.len() - 20..]));
}

#[test]
fn check_config_refuses_an_open_face_beyond_loopback() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.web_port = free_port();
    let toml = cfg.to_toml().replace(
        &format!("listen = \"127.0.0.1:{}\"", cfg.web_port),
        &format!("listen = \"0.0.0.0:{}\"", cfg.web_port),
    );
    let path = state.path().join("pons.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = pons_cli(&["check-config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("reachable beyond this host"), "{err}");
    std::fs::write(
        &path,
        format!("{toml}\n[web.auth]\nkind = \"none\"\nallow_anonymous = true\n"),
    )
    .unwrap();
    let out = pons_cli(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
