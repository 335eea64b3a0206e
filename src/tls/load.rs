//! Reading the certificate, key, client-CA and revocation-list files, and building the server
//! side of TLS from them. Every error names the setting to fix and the file; none quotes file
//! content (a key file's lines are secret).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::ServerTls;
use super::build::Builder;
use super::hubs::HubTable;
use super::revocation::LiveConfigs;
use crate::config::{ConfigError, TlsConfig};

impl ServerTls {
    /// Reads the files `config` names and builds the server side of TLS; `None` when TLS is
    /// off. Called once at start-up, so a bad file stops the server before it listens. Of the
    /// files, only the revocation lists are read again later, when they change (see
    /// `revocation.rs`).
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
        let builder = Builder::new(chain, key, client_roots, config)?;
        let configs = LiveConfigs::load(builder, &config.client_crl_files)?;
        Ok(Some(ServerTls {
            configs: Arc::new(configs),
            hubs: Arc::new(HubTable::new(&config.hubs)),
        }))
    }
}

/// The revocation lists of all `paths`, in order; the first file that cannot be used fails all.
pub(super) fn read_crl_files(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let mut crls = Vec::new();
    for path in paths {
        crls.extend(read_crls(path)?);
    }
    Ok(crls)
}

const CRL_SETTING: &str = "tls.client_crl_files";

/// The certificate revocation lists of a file: PEM (`-----BEGIN X509 CRL-----`, one or more),
/// or one DER-encoded list, each of which parses. Whether they are signed as they should be is
/// checked when a client certificate is checked against them.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let crls = read_crl_encodings(path)?;
    // Parsed here as rustls parses them, so that the error names the file: rustls's own error
    // does not, which matters with several files, and when a file is replaced while we run.
    for (n, crl) in (1..).zip(&crls) {
        webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| {
            ConfigError::new(
                CRL_SETTING,
                format!(
                    "{}: certificate revocation list {n} cannot be used: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(crls)
}

/// The lists of a file in either encoding, not yet parsed.
fn read_crl_encodings(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    match CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
    {
        Ok(crls) if !crls.is_empty() => Ok(crls),
        Ok(_) | Err(pem::Error::NoItemsFound) => {
            let der = std::fs::read(path).map_err(|e| {
                ConfigError::new(CRL_SETTING, format!("cannot read {}: {e}", path.display()))
            })?;
            // DER starts with a SEQUENCE; anything else is neither form.
            if der.first() != Some(&0x30) {
                return Err(ConfigError::new(
                    CRL_SETTING,
                    format!(
                        "{} holds no certificate revocation list (PEM X509 CRL or DER)",
                        path.display()
                    ),
                ));
            }
            Ok(vec![CertificateRevocationListDer::from(der)])
        }
        Err(e) => Err(ConfigError::new(
            CRL_SETTING,
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
