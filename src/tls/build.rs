//! Building the rustls server configurations of both listeners: from what is read once at
//! start-up ([`Builder`]: the server's certificate and key, the client CAs) and the certificate
//! revocation lists in force, which may change while the server runs ([`super::revocation`]).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::PROTOCOL_VERSIONS;
use crate::config::{ConfigError, TlsConfig};

/// ALPN protocols HTTPS offers, preferred first.
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The crypto provider of every TLS configuration we build: ring, our crypto crate.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which of the two listeners a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// HTTPS: ALPN h2 and http/1.1; a client certificate is optional.
    Http,
    /// MLLP: no ALPN; a client certificate is required when a client CA is configured.
    Mllp,
}

/// One rustls configuration per listener, built together from the same lists.
#[derive(Clone)]
pub(super) struct Configs {
    http: Arc<rustls::ServerConfig>,
    mllp: Arc<rustls::ServerConfig>,
}

impl Configs {
    pub(super) fn of(&self, listener: Listener) -> &Arc<rustls::ServerConfig> {
        match listener {
            Listener::Http => &self.http,
            Listener::Mllp => &self.mllp,
        }
    }
}

/// What the configurations are built from besides the revocation lists; it does not change
/// while the server runs.
pub(super) struct Builder {
    /// The server's certificate chain and key, checked to belong together once.
    certified: Arc<dyn ResolvesServerCert>,
    /// The CAs of client certificates; `None` asks for no client certificate.
    client_roots: Option<Arc<RootCertStore>>,
}

impl Builder {
    /// Fails when `key` is not the key of the leaf of `chain`; errors name the setting.
    pub(super) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: Option<Arc<RootCertStore>>,
        config: &TlsConfig,
    ) -> Result<Builder, ConfigError> {
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                "tls.key_file",
                format!(
                    "{} is not the private key of the certificate in {}",
                    config.key_file.display(),
                    config.cert_file.display()
                ),
            ),
            other => ConfigError::new(
                "tls.cert_file",
                format!(
                    "{} with {}: {other}",
                    config.cert_file.display(),
                    config.key_file.display()
                ),
            ),
        })?;
        Ok(Builder {
            certified: Arc::new(SingleCertAndKey::from(certified)),
            client_roots,
        })
    }

    /// Whether client certificates are asked for (a client CA is configured).
    pub(super) fn client_auth(&self) -> bool {
        self.client_roots.is_some()
    }

    /// Both configurations, checking client certificates against `crls`. Each call makes new
    /// configurations with empty session caches, so that no session verified against other
    /// lists can be resumed in them (a resumed handshake does not verify the certificate again).
    pub(super) fn build(
        &self,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Configs, ConfigError> {
        let mut http = self.server_config(self.client_verifier(crls, false)?)?;
        http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        let mllp = self.server_config(self.client_verifier(crls, true)?)?;
        Ok(Configs {
            http: Arc::new(http),
            mllp: Arc::new(mllp),
        })
    }

    fn server_config(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<rustls::ServerConfig, ConfigError> {
        Ok(rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| {
                ConfigError::new("tls", format!("the TLS library refused TLS 1.2/1.3: {e}"))
            })?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::clone(&self.certified)))
    }

    /// No client authentication without roots; otherwise client certificates verified against
    /// the roots, and `required` or merely allowed. With `crls`, every certificate of a client's
    /// chain below the root must be covered by one of them and not revoked (rustls's defaults:
    /// the whole chain, and an unknown status is a refusal), so a missing list fails closed.
    fn client_verifier(
        &self,
        crls: &[CertificateRevocationListDer<'static>],
        required: bool,
    ) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
        let Some(roots) = &self.client_roots else {
            return Ok(WebPkiClientVerifier::no_client_auth());
        };
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider())
            .with_crls(crls.iter().cloned());
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder.build().map_err(|e| match e {
            rustls::server::VerifierBuilderError::InvalidCrl(why) => ConfigError::new(
                "tls.client_crl_files",
                format!("a certificate revocation list cannot be used: {why:?}"),
            ),
            other => ConfigError::new(
                "tls.client_ca_file",
                format!("cannot verify client certificates with it: {other}"),
            ),
        })
    }
}
