//! Our HTTP face around the DICOMweb routes: /readyz checks every PACS,
//! CORS for browser viewers, gzip for JSON, HTTP/2 without TLS (h2c).

mod common;

use common::{free_port, http, HttpResponse, Orthanc, PacsEntry, Pons, PonsConfig};
use std::io::Read;

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http(method, url, headers, b"").unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

#[test]
fn readyz_names_the_pacs_that_does_not_answer() {
    let orthanc = Orthanc::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    let ready = request("GET", &format!("{}/readyz", pons.web_url().unwrap()), &[]);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["pacs"]["main"], "ok");
    drop(pons);

    cfg.pacs.push(PacsEntry::new("gone", "GONE", free_port()));
    let pons = Pons::start(&cfg.to_toml());
    let ready = request("GET", &format!("{}/readyz", pons.web_url().unwrap()), &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["pacs"]["main"], "ok");
    let gone = body["pacs"]["gone"].as_str().unwrap();
    assert!(gone.contains("cannot associate with GONE@"), "{gone}");
}

#[test]
fn browsers_from_listed_origins_may_call_and_json_is_gzipped() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.cors_origins = vec!["https://viewer.example.org".into()];
    let pons = Pons::start(&cfg.to_toml());
    let url = format!("{}/dicom-web/studies", pons.web_url().unwrap());
    let preflight = |origin: &str| {
        request(
            "OPTIONS",
            &url,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "accept"),
            ],
        )
    };
    let allowed = preflight("https://viewer.example.org");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://viewer.example.org"),
        "{:?}",
        allowed.headers
    );
    let other = preflight("https://elsewhere.example.org");
    assert_eq!(other.header("access-control-allow-origin"), None);

    // /readyz answers JSON (503 here: the upstream is a closed port).
    let ready = request(
        "GET",
        &format!("{}/readyz", pons.web_url().unwrap()),
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(ready.header("content-encoding"), Some("gzip"));
    let mut json = String::new();
    flate2::read::GzDecoder::new(&ready.body[..])
        .read_to_string(&mut json)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(body["ready"], false);
}

#[tokio::test]
async fn http2_without_tls_is_served() {
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    let pons = Pons::start(&cfg.to_toml());
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let rsp = client
        .get(format!("{}/healthz", pons.web_url().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.version(), reqwest::Version::HTTP_2);
    assert_eq!(rsp.text().await.unwrap(), "ok\n");
}
