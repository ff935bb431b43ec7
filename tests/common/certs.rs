//! A certificate authority made at test time: RSA keys from openssl (what
//! DCMTK's and Orthanc's TLS 1.2 suites expect), certificates from rcgen
//! (any validity, an expired one too). Files are PEM in a temp dir.

#![allow(dead_code)]

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pki {
    dir: tempfile::TempDir,
    ca_cert: Certificate,
    ca_key: KeyPair,
    /// The CA certificate, to trust.
    pub ca: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new 2048-bit RSA private key in PEM (PKCS#8) at `path`, by openssl.
pub fn write_rsa_key(path: &Path) {
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl genpkey");
}

fn rsa_key(path: &Path) -> KeyPair {
    write_rsa_key(path);
    KeyPair::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rsa_key(&dir.path().join("ca.key"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca_cert,
            ca_key,
            ca,
        }
    }

    /// A leaf valid today for `names` (DNS names or IP addresses), for
    /// servers and clients alike.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.make(file, names, (2020, 2099))
    }

    /// A leaf that expired in 2021.
    pub fn expired(&self, file: &str, names: &[&str]) -> Leaf {
        self.make(file, names, (2020, 2021))
    }

    fn make(&self, file: &str, names: &[&str], years: (i32, i32)) -> Leaf {
        let key_path = self.dir.path().join(format!("{file}.key"));
        let key = rsa_key(&key_path);
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_owned());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = date_time_ymd(years.0, 1, 1);
        params.not_after = date_time_ymd(years.1, 1, 1);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        Leaf {
            cert: cert_path,
            key: key_path,
        }
    }
}
