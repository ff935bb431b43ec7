//! The absolute URLs Pons writes: dicomweb-client (which sends a Host
//! without the port) fetches the BulkDataURI it finds in the metadata;
//! behind a proxy the URLs follow its headers only when it is trusted;
//! `web.public_url` overrides both.

mod common;

use common::*;
use serde_json::Value;

struct Setup {
    orthanc: Orthanc,
    study: String,
    series: String,
}

fn setup() -> Setup {
    let orthanc = Orthanc::start();
    let files = testdata().ct(1).files(1);
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    let (study, series, _, _) = file_uids(&files[0]);
    Setup {
        orthanc,
        study,
        series,
    }
}

fn start(s: &Setup, web_keys: &str) -> (Pons, tempfile::TempDir, u16) {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new(
        "main",
        s.orthanc.aet(),
        s.orthanc.dicom_port(),
    )];
    let toml = cfg
        .to_toml()
        .replace("\n[web]\n", &format!("\n[web]\n{web_keys}\n"));
    let port = cfg.web_port;
    (Pons::start(&toml), state, port)
}

/// The first BulkDataURI of the series metadata, asked with `headers`.
fn bulk_uri(port: u16, s: &Setup, headers: &[(&str, &str)]) -> String {
    let url = format!(
        "http://127.0.0.1:{port}/dicom-web/studies/{}/series/{}/metadata",
        s.study, s.series
    );
    let rsp = http("GET", &url, headers, b"").unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let metadata: Value = rsp.json();
    metadata[0]
        .as_object()
        .unwrap()
        .values()
        .find_map(|v| v.get("BulkDataURI").and_then(Value::as_str))
        .expect("a BulkDataURI")
        .to_owned()
}

#[test]
fn dicomweb_client_fetches_the_bulk_data_uri_from_the_metadata() {
    let s = setup();
    let (_pons, _state, port) = start(&s, "");
    let out = script_command("bulkdata_client.py")
        .arg(format!("http://127.0.0.1:{port}/dicom-web"))
        .args([&s.study, &s.series])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        got["uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/")),
        "{got}"
    );
    assert!(got["bytes"].as_u64().unwrap() > 500_000, "{got}");
}

#[test]
fn proxy_headers_count_only_from_trusted_proxies_and_public_url_wins() {
    let s = setup();
    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "pacs-gw.example.org"),
        ("X-Forwarded-Prefix", "/imaging"),
    ];
    let (_trusting, _st1, port) = start(&s, "trusted_proxies = [\"127.0.0.0/8\"]");
    let uri = bulk_uri(port, &s, &proxied);
    assert!(
        uri.starts_with("https://pacs-gw.example.org/imaging/dicom-web/studies/"),
        "{uri}"
    );
    let forwarded = [(
        "Forwarded",
        "for=192.0.2.60;proto=https;host=gw.example.org",
    )];
    let uri = bulk_uri(port, &s, &forwarded);
    assert!(
        uri.starts_with("https://gw.example.org/dicom-web/"),
        "{uri}"
    );

    let (_wary, _st2, port) = start(&s, "trusted_proxies = [\"10.0.0.0/8\"]");
    let uri = bulk_uri(port, &s, &proxied);
    assert!(
        uri.starts_with(&format!("http://127.0.0.1:{port}/dicom-web/")),
        "{uri}"
    );

    let (_fixed, _st3, port) = start(
        &s,
        "public_url = \"https://pacs.example.org/dicom-web\"\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let uri = bulk_uri(port, &s, &proxied);
    assert!(
        uri.starts_with("https://pacs.example.org/dicom-web/studies/"),
        "{uri}"
    );
}
