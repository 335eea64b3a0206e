//! The client side, for [`crate::hl7v2::mllp::MllpClient::connect_tls`], benchmarks and
//! tests: trust one CA (ours, not the system's), optionally present a client certificate.

use std::io;

use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::build::provider;

/// A client configuration that trusts the CA certificates in `ca_pem`, speaks `versions`
/// (usually [`super::PROTOCOL_VERSIONS`]), and presents `identity` (certificate chain PEM,
/// private key PEM) when the server asks for a client certificate.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    versions: &[&'static SupportedProtocolVersion],
) -> io::Result<ClientConfig> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.map_err(|e| invalid("CA certificate PEM", &e))?;
        roots
            .add(certificate)
            .map_err(|e| invalid("CA certificate", &e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| invalid("protocol versions", &e))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("client certificate PEM", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|_| invalid("client key", &"no PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("client certificate", &e))
        }
    }
}
