//! A certificate authority of a test's own: certificates for services and
//! callers on `127.0.0.1` / `localhost`, written to a directory that goes
//! with it, so tests run the services over mutual TLS as production does.
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::PathBuf;

pub struct Pki {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate (PEM), what `OMS_TLS_CA_FILE` names.
    pub ca: PathBuf,
}

/// A certificate and its key, as files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name` (two CAs of one test are told apart by it).
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("oms-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, issuer.pem()).unwrap();
        Pki { dir, issuer, ca }
    }

    /// A certificate for `127.0.0.1` and `localhost`, good for serving and
    /// for calling (a service does both), signed by this CA.
    pub fn issue(&self, name: &str) -> Issued {
        self.issue_until(name, None)
    }

    /// [`Pki::issue`], expiring at the start of the day `(year, month,
    /// day)` (UTC) when given.
    pub fn issue_until(&self, name: &str, until: Option<(i32, u8, u8)>) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        if let Some((y, m, d)) = until {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// The variables that serve `name`'s certificate and ask callers for
    /// one of this CA (`OMS_TLS_CLIENT_AUTH` defaults to `required`).
    pub fn service_env(&self, name: &str) -> Vec<(&'static str, String)> {
        let issued = self.issue(name);
        vec![
            ("OMS_TLS_CERT_FILE", path(&issued.cert)),
            ("OMS_TLS_KEY_FILE", path(&issued.key)),
            ("OMS_TLS_CA_FILE", path(&self.ca)),
        ]
    }
}

/// A path as a variable's value.
pub fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
