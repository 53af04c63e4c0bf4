//! TLS settings (`OMS_TLS_*`) as the configuration reads them at start,
//! with certificates of a test CA.
use oms_runtime::{Config, Service};
use oms_testkit::pki::{Pki, path};

#[test]
fn production_needs_tls_or_a_mesh_that_gives_it() {
    let secret = ("OMS_AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef");
    let prod = ("OMS_ENVIRONMENT", "production");
    let err = Config::from_pairs(Service::Orders, &[prod, secret]).unwrap_err();
    assert!(err.to_string().contains("needs TLS"), "{err}");
    let meshed = [prod, secret, ("OMS_TLS_OFFLOADED", "true")];
    let c = Config::from_pairs(Service::Orders, &meshed).unwrap();
    assert!(c.tls.is_none() && c.tls_offloaded);

    let pki = Pki::new("test CA");
    let vars: Vec<(&str, String)> = pki.service_env("orders");
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend([prod, secret]);
    let c = Config::from_pairs(Service::Orders, &all).unwrap();
    let tls = c.tls.as_ref().unwrap();
    assert!(tls.serves_tls());
    assert_eq!(tls.client_auth, oms_runtime::tls::ClientAuth::Required);
    // Peers serve TLS too, unless said otherwise.
    assert_eq!(c.peer_url(Service::Inventory), "https://127.0.0.1:50053");
    assert!(!format!("{c:?}").contains("PRIVATE KEY"), "the key printed");
}

#[test]
fn tls_problems_are_reported_at_start() {
    let pki = Pki::new("test CA");
    let (a, b) = (pki.issue("a"), pki.issue("b"));
    let (cert_a, key_b) = (path(&a.cert), path(&b.key));
    let ca = path(&pki.ca);
    let problems =
        |pairs: &[(&str, &str)]| Config::from_pairs(Service::Orders, pairs).unwrap_err().0;
    // A key that is not the certificate's.
    let p = problems(&[
        ("OMS_TLS_CERT_FILE", &cert_a),
        ("OMS_TLS_KEY_FILE", &key_b),
        ("OMS_TLS_CA_FILE", &ca),
    ]);
    assert!(p[0].contains("cannot serve TLS"), "{p:?}");
    // Every other problem at once, each naming its variable.
    let p = problems(&[
        ("OMS_TLS_CERT_FILE", "/nonexistent.crt"),
        ("OMS_TLS_CA_FILE", &key_b),
        ("OMS_TLS_CLIENT_AUTH", "sometimes"),
        ("OMS_TLS_OFFLOADED", "yes"),
        ("OMS_HEALTH_LISTEN_ADDR", "nowhere"),
        ("OMS_TLS_RELOAD_INTERVAL_S", "0"),
    ]);
    let named = [
        "OMS_TLS_CERT_FILE and OMS_TLS_KEY_FILE go together",
        "OMS_TLS_RELOAD_INTERVAL_S=\"0\"",
        "OMS_TLS_CA_FILE=",
        "OMS_TLS_CLIENT_AUTH=\"sometimes\"",
        "OMS_TLS_OFFLOADED=\"yes\"",
        "OMS_HEALTH_LISTEN_ADDR=\"nowhere\"",
    ];
    for n in named {
        assert!(p.iter().any(|e| e.contains(n)), "{n} not in {p:?}");
    }
    // A certificate past its expiry.
    let expired = pki.issue_until("old", Some((2020, 1, 1)));
    let (cert, key) = (path(&expired.cert), path(&expired.key));
    let p = problems(&[
        ("OMS_TLS_CERT_FILE", &cert),
        ("OMS_TLS_KEY_FILE", &key),
        ("OMS_TLS_CA_FILE", &ca),
    ]);
    assert!(p[0].contains("expired at 2020-01-01"), "{p:?}");
    // An https peer needs a CA to check it by.
    let p = problems(&[("OMS_INVENTORY_URL", "https://inventory:50053")]);
    assert!(p[0].contains("needs OMS_TLS_CA_FILE"), "{p:?}");
    // The OTLP exporter's files are checked the same way.
    let p = problems(&[
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_a),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent-ca.crt"),
    ]);
    let named = [
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together",
        "OTEL_EXPORTER_OTLP_CERTIFICATE=\"/nonexistent-ca.crt\"",
    ];
    for n in named {
        assert!(p.iter().any(|e| e.contains(n)), "{n} not in {p:?}");
    }
    // Client certificates need a CA to check them by.
    let p = problems(&[("OMS_TLS_CLIENT_AUTH", "required")]);
    assert!(p[0].contains("OMS_TLS_CLIENT_AUTH"), "{p:?}");
}
