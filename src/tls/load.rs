//! Reading the certificate, key and client-CA files, and building the rustls server
//! configurations from them. Every error names the setting to fix and the file; none quotes
//! file content (a key file's lines are secret).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::hubs::HubTable;
use super::{PROTOCOL_VERSIONS, ServerTls};
use crate::config::{ConfigError, TlsConfig};

/// ALPN protocols HTTPS offers, preferred first.
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The crypto provider of every TLS configuration we build: ring, our crypto crate.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// Reads the files `config` names and builds the server side of TLS; `None` when TLS is
    /// off. Called once at start-up, so a bad file stops the server before it listens.
    pub fn load(config: Option<&TlsConfig>) -> Result<Option<ServerTls>, ConfigError> {
        let Some(config) = config else {
            return Ok(None);
        };
        let chain = read_certificates(&config.cert_file, "tls.cert_file")?;
        let key = read_private_key(&config.key_file)?;
        let client_roots = match &config.client_ca_file {
            Some(path) => Some(read_roots(path)?),
            None => None,
        };
        let mut crls = Vec::new();
        for path in &config.client_crl_files {
            crls.extend(read_crls(path)?);
        }
        let http_verifier = client_verifier(client_roots.clone(), &crls, false)?;
        let mllp_verifier = client_verifier(client_roots.clone(), &crls, true)?;

        let mut http = server_config(http_verifier, chain.clone(), key.clone_key(), config)?;
        http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        let mllp = server_config(mllp_verifier, chain, key, config)?;
        Ok(Some(ServerTls {
            http: Arc::new(http),
            mllp: Arc::new(mllp),
            hubs: Arc::new(HubTable::new(&config.hubs)),
            client_auth: client_roots.is_some(),
        }))
    }
}

fn server_config(
    verifier: Arc<dyn ClientCertVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    config: &TlsConfig,
) -> Result<rustls::ServerConfig, ConfigError> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| ConfigError::new("tls", format!("the TLS library refused TLS 1.2/1.3: {e}")))?
        .with_client_cert_verifier(verifier)
        // Checks that the key belongs to the leaf certificate, too.
        .with_single_cert(chain, key)
        .map_err(|e| match e {
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
        })
}

/// No client authentication without roots; otherwise client certificates verified against
/// `roots`, and `required` or merely allowed. With `crls`, every certificate of a client's
/// chain below the root must be covered by one of them and not revoked (rustls's defaults:
/// the whole chain, and an unknown status is a refusal), so a missing list fails closed.
fn client_verifier(
    roots: Option<Arc<RootCertStore>>,
    crls: &[CertificateRevocationListDer<'static>],
    required: bool,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let Some(roots) = roots else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider())
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

/// The certificate revocation lists of a file: PEM (`-----BEGIN X509 CRL-----`, one or more),
/// or one DER-encoded list. Whether they parse and are signed as they should be is checked when
/// the verifier is built, and when a client certificate is checked against them.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let setting = "tls.client_crl_files";
    match CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
    {
        Ok(crls) if !crls.is_empty() => Ok(crls),
        Ok(_) | Err(pem::Error::NoItemsFound) => {
            let der = std::fs::read(path).map_err(|e| {
                ConfigError::new(setting, format!("cannot read {}: {e}", path.display()))
            })?;
            // DER starts with a SEQUENCE; anything else is neither form.
            if der.first() != Some(&0x30) {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "{} holds no certificate revocation list (PEM X509 CRL or DER)",
                        path.display()
                    ),
                ));
            }
            Ok(vec![CertificateRevocationListDer::from(der)])
        }
        Err(e) => Err(ConfigError::new(
            setting,
            pem_problem(path, &e, "certificate revocation lists"),
        )),
    }
}

/// A PEM certificate chain (leaf first), at least one certificate.
fn read_certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(setting, pem_problem(path, &e, "certificates")))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            setting,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ConfigError::new(
            "tls.key_file",
            pem_problem(path, &e, "a private key (PKCS#8, PKCS#1 or SEC1)"),
        )
    })
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, "tls.client_ca_file")? {
        roots.add(certificate).map_err(|e| {
            ConfigError::new(
                "tls.client_ca_file",
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// What went wrong with a PEM file, without quoting its lines.
fn pem_problem(path: &Path, error: &pem::Error, wanted: &str) -> String {
    let path = path.display();
    match error {
        pem::Error::Io(e) => format!("cannot read {path}: {e}"),
        pem::Error::NoItemsFound => format!("{path} holds no {wanted} in PEM form"),
        _ => format!("{path} is not a valid PEM file of {wanted}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;

    // The error paths, which need no real certificate; tests/it/tls.rs generates real ones
    // (with rcgen) for the paths that do, including a key that does not match.
    fn config(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
            client_crl_files: Vec::new(),
            hubs: Vec::<HubConfig>::new(),
        }
    }

    fn setting_of(result: Result<Option<ServerTls>, ConfigError>) -> (&'static str, String) {
        let error = result.expect_err("loading must fail");
        (error.setting, error.message)
    }

    #[test]
    fn no_config_is_no_tls() {
        assert!(ServerTls::load(None).unwrap().is_none());
    }

    #[test]
    fn a_missing_certificate_file_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (setting, message) = setting_of(ServerTls::load(Some(&config(dir.path()))));
        assert_eq!(setting, "tls.cert_file");
        assert!(message.starts_with("cannot read "), "{message}");
    }

    #[test]
    fn a_file_without_certificates_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
        let (setting, message) = setting_of(ServerTls::load(Some(&config(dir.path()))));
        assert_eq!(setting, "tls.cert_file");
        assert!(message.contains("holds no PEM certificate"), "{message}");
    }

    #[test]
    fn a_file_without_a_crl_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("list.crl"), "not a list\n").unwrap();
        let (setting, message) = match read_crls(&dir.path().join("list.crl")) {
            Err(error) => (error.setting, error.message),
            Ok(_) => panic!("read"),
        };
        assert_eq!(setting, "tls.client_crl_files");
        assert!(
            message.contains("holds no certificate revocation list"),
            "{message}"
        );
        assert!(
            read_crls(&dir.path().join("missing.crl"))
                .unwrap_err()
                .message
                .contains("cannot read")
        );
    }

    #[test]
    fn a_bad_key_file_is_reported_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        // Any well-formed certificate PEM block gets past the certificate check.
        std::fs::write(
            dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nsecret!!\n",
        )
        .unwrap();
        let (setting, message) = setting_of(ServerTls::load(Some(&config(dir.path()))));
        assert_eq!(setting, "tls.key_file");
        assert!(!message.contains("secret"), "{message}");
    }
}
