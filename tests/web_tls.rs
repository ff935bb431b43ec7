//! HTTPS on the web face: curl over HTTP/2 and HTTP/1.1 (ALPN), dicomweb-client
//! trusting a private CA, client certificates when `client_ca` is set, and a
//! renewed certificate taken up without dropping open connections.

mod common;

use common::certs::{Leaf, Pki};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn tls_config(leaf: &Leaf, client_ca: Option<&Path>) -> String {
    let mut s = format!(
        "\n[web.tls]\ncert = {:?}\nkey = {:?}\n",
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    );
    if let Some(ca) = client_ca {
        s.push_str(&format!("client_ca = {:?}\n", ca.display().to_string()));
    }
    s
}

/// curl's status code and HTTP version (`200 2`), or its error.
fn curl(url: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn https_with_alpn_for_curl_and_dicomweb_client() {
    let orthanc = Orthanc::start();
    let files = testdata().ct(1).files(1);
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    let pki = Pki::new("Pons test CA");
    let server = pki.leaf("server", &["localhost", "127.0.0.1"]);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&(cfg.to_toml() + &tls_config(&server, None)));
    let base = format!("https://localhost:{}", cfg.web_port);
    let studies = format!("{base}/dicom-web/studies");
    let ca = pki.ca.to_str().unwrap();

    assert_eq!(
        curl(&studies, &["--cacert", ca, "--http2"]).unwrap(),
        "200 2"
    );
    assert_eq!(
        curl(&studies, &["--cacert", ca, "--http1.1"]).unwrap(),
        "200 1.1"
    );
    // Without our CA the certificate does not verify; plain HTTP gets nothing.
    let untrusted = curl(&studies, &[]).unwrap_err();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    assert!(curl(&format!("http://127.0.0.1:{}/healthz", cfg.web_port), &[]).is_err());

    let out = script_command("qido_client.py")
        .arg(format!("{base}/dicom-web"))
        .arg(r#"[{"op": "studies"}]"#)
        .env("REQUESTS_CA_BUNDLE", &pki.ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{stdout}");
    drop(pons);
}

#[test]
fn client_certificates_are_required_when_client_ca_is_set() {
    let pki = Pki::new("Pons test CA");
    let server = pki.leaf("server", &["localhost"]);
    let client = pki.leaf("viewer", &["viewer.example.org"]);
    let stranger = Pki::new("Another CA").leaf("stranger", &["viewer.example.org"]);
    let state = tempfile::tempdir().unwrap();
    let cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    let pons = Pons::start(&(cfg.to_toml() + &tls_config(&server, Some(&pki.ca))));
    let url = format!("https://localhost:{}/healthz", cfg.web_port);
    let ca = pki.ca.to_str().unwrap();
    let with = |leaf: &Leaf| {
        curl(
            &url,
            &[
                "--cacert",
                ca,
                "--cert",
                leaf.cert.to_str().unwrap(),
                "--key",
                leaf.key.to_str().unwrap(),
            ],
        )
    };
    assert_eq!(with(&client).unwrap(), "200 2");
    assert!(
        curl(&url, &["--cacert", ca]).is_err(),
        "no client certificate"
    );
    assert!(
        with(&stranger).is_err(),
        "a client certificate from another CA"
    );
    assert!(
        pons.log().contains("TLS handshake failed"),
        "{}",
        pons.log()
    );
}

/// One kept-alive HTTP/1.1 connection over TLS, trusting `ca`.
struct Conn(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Conn {
    fn open(port: u16, ca: &Path) -> Conn {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).unwrap();
        for cert in rustls_pemfile_certs(&pem) {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(pons::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(rustls::StreamOwned::new(conn, tcp))
    }

    /// GET /healthz on this connection: the status and body.
    fn healthz(&mut self) -> (u16, String) {
        self.0
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(&mut self.0);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_renewed_certificate_is_taken_up_without_dropping_connections() {
    let old_ca = Pki::new("Old CA");
    let new_ca = Pki::new("New CA");
    let state = tempfile::tempdir().unwrap();
    let (cert, key) = (state.path().join("web.pem"), state.path().join("web.key"));
    let install = |leaf: &Leaf| {
        // As certbot does: new files renamed into place.
        std::fs::copy(&leaf.cert, state.path().join("tmp.pem")).unwrap();
        std::fs::copy(&leaf.key, state.path().join("tmp.key")).unwrap();
        std::fs::rename(state.path().join("tmp.key"), &key).unwrap();
        std::fs::rename(state.path().join("tmp.pem"), &cert).unwrap();
    };
    install(&old_ca.leaf("web-old", &["localhost"]));
    let cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    let leaf = Leaf {
        cert: cert.clone(),
        key: key.clone(),
    };
    let mut pons = Pons::start(&(cfg.to_toml() + &tls_config(&leaf, None)));
    let url = format!("https://localhost:{}/healthz", cfg.web_port);
    let mut open = Conn::open(cfg.web_port, &old_ca.ca);
    assert_eq!(open.healthz(), (200, "ok\n".into()));

    install(&new_ca.leaf("web-new", &["localhost"]));
    let renewed = wait_until(Duration::from_secs(15), || {
        curl(&url, &["--cacert", new_ca.ca.to_str().unwrap()]).is_ok()
    });
    assert!(
        renewed,
        "the new certificate was not served: {}",
        pons.log()
    );
    assert!(curl(&url, &["--cacert", old_ca.ca.to_str().unwrap()]).is_err());
    // The connection opened before keeps working with the old certificate.
    assert_eq!(open.healthz(), (200, "ok\n".into()));

    // A broken file is refused and the current certificate kept; SIGHUP
    // reloads at once once the files are good again.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(wait_until(Duration::from_secs(15), || pons
        .log()
        .contains("TLS certificate not reloaded")));
    assert!(curl(&url, &["--cacert", new_ca.ca.to_str().unwrap()]).is_ok());
    install(&old_ca.leaf("web-again", &["localhost"]));
    let pid = pons.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(wait_until(Duration::from_secs(10), || pons
        .log()
        .contains("SIGHUP: TLS certificates are read again")));
    assert!(wait_until(Duration::from_secs(3), || {
        curl(&url, &["--cacert", old_ca.ca.to_str().unwrap()]).is_ok()
    }));
    assert!(pons.is_running());
}

/// The upstream over mutual TLS with a private CA: one Pons (direction A)
/// stores through another Pons's HTTPS face (direction B, client
/// certificates required) into Orthanc.
#[test]
fn the_upstream_is_reached_over_mutual_tls_with_a_private_ca() {
    let orthanc = Orthanc::start();
    let pki = Pki::new("Archive CA");
    let server = pki.leaf("archive", &["localhost"]);
    let client = pki.leaf("gateway", &["gateway.example.org"]);
    let b_state = tempfile::tempdir().unwrap();
    let mut b_cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", b_state.path());
    b_cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let _archive = Pons::start(&(b_cfg.to_toml() + &tls_config(&server, Some(&pki.ca))));

    let start_a = |cert: Option<&Leaf>, state: &Path| {
        let url = format!("https://localhost:{}/dicom-web", b_cfg.web_port);
        let cfg = PonsConfig::new(&url, state);
        let mut keys = format!("ca = {:?}\n", pki.ca.display().to_string());
        if let Some(c) = cert {
            keys += &format!(
                "cert = {:?}\nkey = {:?}\n",
                c.cert.display().to_string(),
                c.key.display().to_string()
            );
        }
        let toml = cfg
            .to_toml()
            .replace("[upstream]\n", &format!("[upstream]\n{keys}"));
        Pons::start(&toml)
    };
    let files = testdata().ct(3).files(3);
    let a_state = tempfile::tempdir().unwrap();
    let gateway = start_a(Some(&client), a_state.path());
    storescu("MODALITY", "PONS", gateway.dimse_port(), &files, &[]).assert_success();
    assert_eq!(orthanc.wait_for_instances(3, Duration::from_secs(30)), 3);

    // Without our certificate the archive refuses the handshake: readyz says so.
    let bare_state = tempfile::tempdir().unwrap();
    let bare = start_a(None, bare_state.path());
    let ready = http(
        "GET",
        &format!("{}/readyz", bare.web_url().unwrap()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
}
