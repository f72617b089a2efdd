//! A certificate authority made in the test, and TLS acceptors presenting certificates it
//! signed (or signed by nobody anyone trusts), for HTTPS servers on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;

pub struct TestCa {
    issuer: rcgen::CertifiedKey,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        TestCa {
            issuer: rcgen::CertifiedKey { cert, key_pair },
        }
    }

    /// The CA certificate, PEM, written to `path`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.issuer.cert.pem()).unwrap();
    }

    /// An acceptor presenting a certificate for 127.0.0.1 signed by this CA (HTTP/1.1).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor_offering(b"http/1.1")
    }

    /// The same, offering only HTTP/2 (ALPN `h2`).
    pub fn acceptor_h2(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor_offering(b"h2")
    }

    fn acceptor_offering(&self, protocol: &[u8]) -> tokio_rustls::TlsAcceptor {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key_pair, &self.issuer.cert, &self.issuer.key_pair)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), self.issuer.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![protocol.to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
