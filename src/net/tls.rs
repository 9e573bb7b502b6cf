//! TLS configuration: rustls with the ring provider, TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use thiserror::Error;

/// A TLS setting that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file is missing or holds no usable certificate or key.
    #[error("{file}: {problem}")]
    Pem {
        /// the file
        file: String,
        /// what is wrong
        problem: String,
    },
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn pem_err(file: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        file: file.display().to_string(),
        problem: problem.to_string(),
    }
}

fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_err(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(file, e))?;
    if certs.is_empty() {
        return Err(pem_err(file, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The channel binding data of `tls-server-end-point` (RFC 5929) for the listener's
/// certificate: its hash with the hash function of its signature (SHA-256 for SHA-1,
/// MD5 and SHA-256 signatures). `None` when RFC 5929 defines none (Ed25519, say): then
/// SCRAM-SHA-256-PLUS is not offered.
fn server_end_point(der: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use sha2::Digest;
    use x509_parser::oid_registry as oids;
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let alg = &parsed.signature_algorithm.algorithm;
    Ok(
        if [
            oids::OID_PKCS1_SHA384WITHRSA,
            oids::OID_SIG_ECDSA_WITH_SHA384,
        ]
        .contains(alg)
        {
            Some(sha2::Sha384::digest(der).to_vec())
        } else if [
            oids::OID_PKCS1_SHA512WITHRSA,
            oids::OID_SIG_ECDSA_WITH_SHA512,
        ]
        .contains(alg)
        {
            Some(sha2::Sha512::digest(der).to_vec())
        } else if [oids::OID_SIG_ED25519, oids::OID_SIG_ED448].contains(alg) {
            None
        } else {
            Some(sha2::Sha256::digest(der).to_vec())
        },
    )
}

/// The names a client certificate (DER) gives its subject: the common names, and the DNS
/// and email names of its subject alternative names. Empty when it does not parse.
pub(crate) fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = (cert.subject().iter_common_name())
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::RFC822Name(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    names
}

/// The listener's TLS configuration from a PEM certificate chain and key, and the
/// certificate's channel binding data ([`server_end_point`]); with
/// `clients` (CA file, optional CRL file), client certificates are asked for, and those
/// sent must chain to one of the CAs, be current and not be revoked (a client may also
/// send none: whether its user needs one is decided at login).
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    clients: Option<(&Path, Option<&Path>)>,
) -> Result<(Arc<ServerConfig>, Option<Vec<u8>>), TlsError> {
    let certs = load_certs(cert)?;
    let end_point = server_end_point(&certs[0]).map_err(|e| pem_err(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let config = match clients {
        None => builder.with_no_client_auth(),
        Some((ca, crl)) => builder.with_client_cert_verifier(client_verifier(ca, crl)?),
    };
    let mut config = config.with_single_cert(certs, key)?;
    // TLS session resumption: stateless tickets (their key rotates) for any number of
    // clients, and a session cache for clients that resume by id
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok((Arc::new(config), end_point))
}

/// TLS sessions kept for resumption by session id.
const SESSION_CACHE: usize = 4096;

fn client_verifier(
    ca: &Path,
    crl: Option<&Path>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| pem_err(ca, e))?;
    }
    let crls = match crl {
        Some(file) => CertificateRevocationListDer::pem_file_iter(file)
            .map_err(|e| pem_err(file, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(file, e))?,
        None => Vec::new(),
    };
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        .allow_unauthenticated()
        .build()
        .map_err(|e| pem_err(ca, e))
}

/// The upstream TLS configuration: verifying against `ca_file` (or the Mozilla roots), or
/// (`verify = false`, tls = require) accepting any certificate.
pub(crate) fn client_config(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(f) => {
                for c in load_certs(f)? {
                    roots.add(c).map_err(|e| pem_err(f, e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let algs = provider().signature_verification_algorithms;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algs)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to verify the upstream certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|e| TlsError::Pem {
        file: "upstream.server_name".into(),
        problem: e.to_string(),
    })
}

/// `tls = "require"`: encrypt, but accept any certificate (libpq's sslmode=require).
/// Handshake signatures are still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    /// The DER of a certificate signed with `alg`.
    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_hash() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let hash = super::server_end_point(&p256).expect("reads");
        assert_eq!(hash, Some(sha2::Sha256::digest(&p256).to_vec()));
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        let hash = super::server_end_point(&p384).expect("reads");
        assert_eq!(hash, Some(sha2::Sha384::digest(&p384).to_vec()));
        let ed = cert(&rcgen::PKCS_ED25519);
        assert_eq!(super::server_end_point(&ed).expect("reads"), None);
    }
}
