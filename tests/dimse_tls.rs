//! DICOM TLS, both roles, against real peers. As SCP: DCMTK echoscu,
//! storescu and findscu with `+tls` to Pons's `[dimse.tls]` listener, with
//! Orthanc as the DICOMweb origin. As SCU: Orthanc with DICOM TLS enabled as
//! the PACS behind Pons's DICOMweb face. Certificates are made at test time.

mod common;

use common::certs::{Leaf, Pki};
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// DCMTK's TLS options: our key and certificate (or none: anonymous TLS),
/// trusting `ca`.
fn tls_args<'a>(leaf: Option<&'a Leaf>, ca: &'a Path) -> Vec<&'a str> {
    let mut args = match leaf {
        Some(l) => vec!["+tls", p(&l.key), p(&l.cert), "-pw"],
        None => vec!["+tla"],
    };
    args.extend(["+cf", p(ca)]);
    args
}

fn ok(out: &Output) -> bool {
    out.status.success()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn dcmtk_over_tls_stores_finds_and_echoes_and_bad_certificates_are_refused() {
    let orthanc = Orthanc::start();
    let pki = Pki::new("Hospital CA");
    let server = pki.leaf("pons", &["localhost", "127.0.0.1"]);
    let modality = pki.leaf("modality", &["modality.example.org"]);
    let other_device = pki.leaf("other", &["other.example.org"]);
    let wildcard = pki.leaf("wildcard", &["*.example.org"]);
    let expired = pki.expired("old-modality", &["modality.example.org"]);
    let foreign_pki = Pki::new("Someone else's CA");
    let foreign = foreign_pki.leaf("foreign", &["modality.example.org"]);

    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let tls_port = free_port();
    let toml = cfg.to_toml().replace(
        "\n[web]",
        &format!(
            "\n[dimse.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\n[web]",
            p(&server.cert),
            p(&server.key),
            p(&pki.ca)
        ),
    ) + "\n[[ae]]\ntitle = \"CT1\"\nhost = \"127.0.0.1\"\nport = 104\ncertificate_name = \"modality.example.org\"\n";
    let pons = Pons::start(&toml);
    assert!(wait_for_port(tls_port, Duration::from_secs(5)));
    let good = tls_args(Some(&modality), &pki.ca);

    // C-ECHO, C-STORE and C-FIND over TLS.
    let echo = echoscu("CT1", "PONS", tls_port, &good);
    assert!(ok(&echo), "{}", text(&echo));
    let files = testdata().ct(3).files(3);
    storescu("CT1", "PONS", tls_port, &files, &good).assert_success();
    assert_eq!(orthanc.wait_for_instances(3, Duration::from_secs(30)), 3);
    let (study, _, _, _) = file_uids(&files[0]);
    let out_dir = tempfile::tempdir().unwrap();
    let find = dcmtk("findscu")
        .args(["-S", "-aet", "CT1", "-aec", "PONS", "-X", "-od"])
        .arg(out_dir.path())
        .args(&good)
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
        .arg(format!("StudyInstanceUID={study}"))
        .args(["-k", "NumberOfStudyRelatedInstances", "127.0.0.1"])
        .arg(tls_port.to_string())
        .output()
        .unwrap();
    assert!(ok(&find), "{}", text(&find));
    let matches: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(matches.len(), 1, "{}", text(&find));

    // Each refused at the handshake (or, for the AE binding, at association):
    let refused: Vec<(&str, Output)> = vec![
        (
            "no client certificate",
            echoscu("CT1", "PONS", tls_port, &tls_args(None, &pki.ca)),
        ),
        (
            "an expired certificate",
            echoscu("CT1", "PONS", tls_port, &tls_args(Some(&expired), &pki.ca)),
        ),
        (
            "a certificate from another CA",
            echoscu("CT1", "PONS", tls_port, &tls_args(Some(&foreign), &pki.ca)),
        ),
        (
            "Pons's certificate not trusted",
            echoscu(
                "CT1",
                "PONS",
                tls_port,
                &tls_args(Some(&modality), &foreign_pki.ca),
            ),
        ),
        (
            "plain DICOM on the TLS port",
            echoscu("CT1", "PONS", tls_port, &["-to", "5"]),
        ),
        (
            "CT1 with another device's certificate",
            echoscu(
                "CT1",
                "PONS",
                tls_port,
                &tls_args(Some(&other_device), &pki.ca),
            ),
        ),
        (
            "CT1 with a wildcard certificate",
            echoscu("CT1", "PONS", tls_port, &tls_args(Some(&wildcard), &pki.ca)),
        ),
        (
            "CT1 without TLS",
            echoscu("CT1", "PONS", pons.dimse_port(), &[]),
        ),
    ];
    for (why, out) in &refused {
        assert!(!ok(out), "{why}: accepted\n{}", text(out));
    }
    // Another AE with a valid certificate may call: only CT1 is bound.
    let other = echoscu(
        "WORKSTATION",
        "PONS",
        tls_port,
        &tls_args(Some(&other_device), &pki.ca),
    );
    assert!(ok(&other), "{}", text(&other));
    let log = pons.log();
    assert!(log.contains("DICOM TLS handshake failed"), "{log}");
    assert!(
        log.contains("no verified client certificate names it"),
        "{log}"
    );
}

/// An Orthanc whose DICOM port speaks TLS only and requires our certificate.
fn tls_orthanc(pki: &Pki, leaf: &Leaf) -> Orthanc {
    Orthanc::start_with(OrthancOptions {
        extra: json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": leaf.cert,
            "DicomTlsPrivateKey": leaf.key,
            "DicomTlsTrustedCertificates": pki.ca,
            "DicomTlsRemoteCertificateRequired": true,
        }),
        ..Default::default()
    })
}

#[test]
fn orthanc_behind_the_dicomweb_face_over_tls() {
    let pki = Pki::new("Hospital CA");
    let orthanc_leaf = pki.leaf("orthanc", &["localhost", "127.0.0.1"]);
    let pons_leaf = pki.leaf("pons", &["pons.example.org"]);
    let orthanc = tls_orthanc(&pki, &orthanc_leaf);
    let files = testdata().ct(2).files(2);
    for f in &files {
        let rsp = http(
            "POST",
            &format!("{}/instances", orthanc.rest_url()),
            &[],
            &std::fs::read(f).unwrap(),
        )
        .unwrap();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
    let (study, series, sop, _) = file_uids(&files[0]);

    let start = |ca: &Path| {
        let state = tempfile::tempdir().unwrap();
        let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
        cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
        let toml = cfg.to_toml()
            + &format!(
                "tls = true\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
                p(ca),
                p(&pons_leaf.cert),
                p(&pons_leaf.key)
            );
        (Pons::start(&toml), state)
    };
    let (pons, _state) = start(&pki.ca);
    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    // QIDO-RS → C-FIND over TLS.
    let found = http(
        "GET",
        &format!("{base}/studies?StudyInstanceUID={study}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(found.status, 200, "{}\n{}", found.text(), pons.log());
    assert_eq!(found.json().as_array().unwrap().len(), 1);
    // WADO-RS → C-GET over TLS: the very bytes Orthanc holds.
    let url = format!("{base}/studies/{study}/series/{series}/instances/{sop}");
    let got = http(
        "GET",
        &url,
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    )
    .unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    let parts = common::multipart::parts(&got);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].sop(), sop);
    drop(pons);

    // A PACS whose certificate does not chain to the CA we trust: no
    // association, a 502 saying why, and the reason in the log.
    let stranger = Pki::new("Not the hospital's CA");
    let (pons, _state) = start(&stranger.ca);
    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    let refused = http("GET", &format!("{base}/studies"), &[], b"").unwrap();
    assert!(
        refused.status == 502 || refused.status == 503,
        "{} {}",
        refused.status,
        refused.text()
    );
    assert!(
        pons.log().to_lowercase().contains("certificate"),
        "{}",
        pons.log()
    );
}

/// C-MOVE sub-operations to a destination that speaks TLS only: a DCMTK
/// storescp with `+tls` that requires our certificate.
#[test]
fn move_sub_operations_reach_a_tls_destination() {
    let orthanc = Orthanc::start();
    let files = testdata().ct(3).files(3);
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    let pki = Pki::new("Hospital CA");
    let pons_leaf = pki.leaf("pons", &["pons.example.org"]);
    let station = pki.leaf("station", &["localhost", "127.0.0.1"]);
    let tls_scp_args = [
        "+tls",
        p(&station.key),
        p(&station.cert),
        "-pw",
        "+cf",
        p(&pki.ca),
        "-rc",
    ];
    let scp = StoreScp::start_with_args("STATION", &tls_scp_args);
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new(&orthanc.dicomweb_url(), state.path());
    let toml = cfg.to_toml()
        + &format!(
            "\n[[ae]]\ntitle = \"STATION\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            scp.port(),
            p(&pki.ca),
            p(&pons_leaf.cert),
            p(&pons_leaf.key)
        );
    let pons = Pons::start(&toml);
    let study = format!("StudyInstanceUID={}", file_uids(&files[0]).0);
    let out = dcmtk("movescu")
        .args([
            "-v", "-S", "-aet", "MODALITY", "-aec", "PONS", "-aem", "STATION",
        ])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &study])
        .args(["127.0.0.1", &pons.dimse_port().to_string()])
        .output()
        .unwrap();
    let log = text(&out);
    assert!(
        log.contains("Final Move Response (Success)"),
        "{log}\n{}",
        pons.log()
    );
    assert_eq!(scp.files().len(), 3, "{}", scp.log_tail(20));
    for f in &files {
        let sop = file_uids(f).2;
        let received = scp
            .files()
            .into_iter()
            .find(|r| file_uids(r).2 == sop)
            .unwrap();
        assert_same_dataset(f, &std::fs::read(received).unwrap());
    }
}
