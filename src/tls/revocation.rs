//! [`LiveConfigs`]: the rustls configurations of both listeners, rebuilt when a file of
//! `tls.client_crl_files` changes, so that publishing a new revocation list needs no restart.
//!
//! Each handshake asks for the configuration of its listener ([`LiveConfigs::for_handshake`]);
//! at most every [`RECHECK`](crate::watch::RECHECK) (2 s) that looks at the modification times
//! and sizes of the files ([`WatchedFiles`], shared with the JWKS file), and when one changed,
//! all files are read again and both configurations rebuilt. A handshake that starts that long
//! after a file was replaced is checked against the new lists, on HTTPS and MLLP alike.
//! Connections established before keep going: revocation is checked in the handshake only.
//!
//! Why whole configurations are rebuilt, rather than only the client-certificate verifier
//! swapped inside one configuration: a configuration keeps a session cache, and a resumed
//! handshake restores the client certificate of the session without verifying it again. Keeping
//! the cache would let a hub whose certificate was just revoked resume a session from before, for
//! as long as the cache remembers it. New configurations start with empty caches.
//!
//! Fail-safe: when a file cannot be read or holds no usable list, the lists in force stay in
//! force, all of them (never a mix of old and new files), and a warning names the setting and
//! the file, once per change of the files. Nothing here panics on a bad file.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rustls_pki_types::CertificateRevocationListDer;

use super::build::{Builder, Configs, Listener};
use super::load::read_crl_files;
use crate::config::ConfigError;
use crate::watch::WatchedFiles;

/// The configurations in force, and the revocation lists they were built with.
pub(super) struct LiveConfigs {
    builder: Builder,
    /// Read (for an `Arc` clone, no longer) at every handshake, written once per change of the
    /// lists: a plain `RwLock` does, no lock-free swap needed.
    current: RwLock<Arc<InForce>>,
    /// `None` without `tls.client_crl_files`: then nothing ever changes.
    files: Option<WatchedFiles>,
}

struct InForce {
    configs: Configs,
    /// To tell a file whose content changed from one that was only touched or rewritten as it was.
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl LiveConfigs {
    /// Reads the lists of `crl_files` and builds the configurations; at start-up, where a bad
    /// file stops the server.
    pub(super) fn load(
        builder: Builder,
        crl_files: &[PathBuf],
    ) -> Result<LiveConfigs, ConfigError> {
        let files =
            (!crl_files.is_empty()).then(|| WatchedFiles::new(crl_files.to_vec(), Instant::now()));
        let crls = read_crl_files(crl_files)?;
        let configs = builder.build(&crls)?;
        Ok(LiveConfigs {
            builder,
            current: RwLock::new(Arc::new(InForce { configs, crls })),
            files,
        })
    }

    /// Whether client certificates are asked for (a client CA is configured).
    pub(super) fn client_auth(&self) -> bool {
        self.builder.client_auth()
    }

    /// The configuration for a handshake on `listener` that starts now, with the revocation
    /// lists read again first if that is due and a file changed.
    ///
    /// That read happens in the task of the connection that asks when it is due, as the JWKS
    /// file's does for a request: revocation lists are small local files, read once per change;
    /// other handshakes meanwhile go on with the configuration in force (they do not wait).
    pub(super) fn for_handshake(&self, listener: Listener) -> Arc<rustls::ServerConfig> {
        self.refresh_if_due(Instant::now());
        Arc::clone(self.in_force().configs.of(listener))
    }

    /// What reading the files again came to, when that was due and a file changed; logged.
    fn refresh_if_due(&self, now: Instant) -> Option<Outcome> {
        let files = self.files.as_ref()?;
        let mut outcome = None;
        files.read_if_changed(now, |changed| outcome = Some(self.reload(files, changed)));
        outcome.inspect(Outcome::log)
    }

    fn in_force(&self) -> Arc<InForce> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads all files and rebuilds both configurations when the lists differ from those in
    /// force; `changed` says whether the files changed since the last read, good or bad.
    fn reload(&self, files: &WatchedFiles, changed: bool) -> Outcome {
        let rebuilt = read_crl_files(files.paths()).and_then(|crls| {
            if crls == self.in_force().crls {
                return Ok(None);
            }
            let configs = self.builder.build(&crls)?;
            Ok(Some(InForce { configs, crls }))
        });
        match rebuilt {
            Ok(Some(in_force)) => {
                let lists = in_force.crls.len();
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(in_force);
                Outcome::Replaced { lists }
            }
            Ok(None) => Outcome::Unchanged,
            Err(error) => Outcome::Kept {
                error,
                news: changed,
            },
        }
    }
}

/// What a read of the files came to.
#[derive(Debug)]
enum Outcome {
    /// New lists are in force, this many.
    Replaced { lists: usize },
    /// The files hold the lists in force (rewritten as they were, or touched).
    Unchanged,
    /// A file cannot be used, so the lists in force stay. `news` when the files changed since
    /// the last read: a file that stays broken is reported once, not at every look.
    Kept { error: ConfigError, news: bool },
}

impl Outcome {
    fn log(&self) {
        match self {
            Outcome::Replaced { lists } => tracing::info!(
                lists,
                "tls.client_crl_files changed; new handshakes are checked against the new lists"
            ),
            // The message names the setting and the file, never file content.
            Outcome::Kept { error, news: true } => tracing::warn!(
                setting = error.setting,
                error = %error.message,
                "certificate revocation lists cannot be read again; the lists read before stay in force"
            ),
            Outcome::Kept { news: false, .. } | Outcome::Unchanged => {}
        }
    }
}

// The test CA of the integration tests, which uses nothing but rcgen.
#[cfg(test)]
#[path = "../../tests/it/common/ca.rs"]
mod test_ca;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
    use rustls::RootCertStore;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::config::TlsConfig;
    use crate::watch::RECHECK;

    // Whether a handshake is refused is tested over real sockets in tests/it/crl.rs; here, which
    // lists are in force after which change of the files.

    struct Pki {
        dir: tempfile::TempDir,
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Pki {
            Pki {
                dir: tempfile::tempdir().unwrap(),
                ca: test_ca::new_ca("hub CA"),
            }
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.path().join(file)
        }

        /// Writes a list of the CA numbered `number` that revokes `serials` to `file`; its PEM.
        fn write_crl(&self, file: &str, number: u64, serials: &[u64]) -> String {
            let pem = test_ca::crl_pem(&self.ca, number, serials);
            std::fs::write(self.path(file), &pem).unwrap();
            pem
        }

        /// The configurations of a server whose certificate the CA issued, with `crl_files`.
        fn live(&self, crl_files: &[&str]) -> LiveConfigs {
            let key = KeyPair::generate().unwrap();
            let server = CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let config = TlsConfig {
                cert_file: self.path("server.pem"),
                key_file: self.path("server-key.pem"),
                client_ca_file: Some(self.path("ca.pem")),
                client_crl_files: Vec::new(),
                hubs: Vec::new(),
            };
            let builder = Builder::new(
                vec![server.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
                Some(Arc::new(roots)),
                &config,
            )
            .unwrap();
            let files: Vec<PathBuf> = crl_files.iter().map(|file| self.path(file)).collect();
            LiveConfigs::load(builder, &files).unwrap()
        }
    }

    /// The configurations in force, to compare by identity: a rebuild makes new ones.
    fn configs(live: &LiveConfigs) -> [Arc<rustls::ServerConfig>; 2] {
        [Listener::Http, Listener::Mllp].map(|l| Arc::clone(live.in_force().configs.of(l)))
    }

    fn same(a: &[Arc<rustls::ServerConfig>; 2], b: &[Arc<rustls::ServerConfig>; 2]) -> bool {
        Arc::ptr_eq(&a[0], &b[0]) && Arc::ptr_eq(&a[1], &b[1])
    }

    fn crls_of(pems: &[&str]) -> Vec<CertificateRevocationListDer<'static>> {
        pems.iter()
            .map(|pem| CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn a_replaced_list_is_put_in_force_and_a_broken_one_is_not() {
        let pki = Pki::new();
        let a = pki.write_crl("a.crl", 1, &[]);
        let b = pki.write_crl("b.crl", 1, &[]);
        let live = pki.live(&["a.crl", "b.crl"]);
        let start = Instant::now();
        let first = configs(&live);
        assert_eq!(live.in_force().crls, crls_of(&[&a, &b]));

        // Written again with the same lists (another size, so it is read): nothing to rebuild.
        std::fs::write(pki.path("a.crl"), format!("{a}\n")).unwrap();
        assert!(matches!(
            live.refresh_if_due(start + RECHECK),
            Some(Outcome::Unchanged)
        ));
        assert!(same(&first, &configs(&live)));

        // A new list: not before RECHECK has passed since the last look, then at once.
        let b = pki.write_crl("b.crl", 2, &[7]);
        live.refresh_if_due(start + RECHECK + RECHECK / 2);
        assert!(same(&first, &configs(&live)), "not due yet");
        live.refresh_if_due(start + RECHECK * 2);
        let second = configs(&live);
        assert!(!same(&first, &second));
        assert_eq!(live.in_force().crls, crls_of(&[&a, &b]));

        // One file broken, missing or emptied while the other changes: all lists in force
        // stay, and so do the configurations built with them.
        let breakages: [&dyn Fn(&Path); 4] = [
            &|path| {
                std::fs::write(
                    path,
                    "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
                )
                .unwrap()
            },
            &|path| std::fs::write(path, [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap(),
            &|path| std::fs::write(path, "").unwrap(),
            &|path| std::fs::remove_file(path).unwrap(),
        ];
        for (n, break_file) in (0u32..).zip(breakages) {
            pki.write_crl("a.crl", 10 + u64::from(n), &[8]);
            break_file(&pki.path("b.crl"));
            live.refresh_if_due(start + RECHECK * (3 + n));
            assert!(same(&second, &configs(&live)), "breakage {n}");
            assert_eq!(live.in_force().crls, crls_of(&[&a, &b]), "breakage {n}");
        }

        // Repaired: the new lists of both files are put in force.
        let a = pki.write_crl("a.crl", 20, &[8]);
        let b = pki.write_crl("b.crl", 3, &[7, 9]);
        live.refresh_if_due(start + RECHECK * 10);
        assert!(!same(&second, &configs(&live)));
        assert_eq!(live.in_force().crls, crls_of(&[&a, &b]));
    }

    /// The error of an outcome that keeps the lists, and whether it is logged.
    fn kept(outcome: Option<Outcome>) -> (ConfigError, bool) {
        match outcome {
            Some(Outcome::Kept { error, news }) => (error, news),
            other => panic!("the lists were not kept: {other:?}"),
        }
    }

    #[test]
    fn a_broken_list_is_reported_once_by_setting_and_file() {
        let pki = Pki::new();
        pki.write_crl("a.crl", 1, &[]);
        let secret = pki.write_crl("b.crl", 1, &[]);
        let live = pki.live(&["a.crl", "b.crl"]);
        let start = Instant::now();

        // A list of the right shape whose content is not one: named, content not quoted.
        let body = secret.lines().nth(1).unwrap();
        std::fs::write(
            pki.path("b.crl"),
            format!("-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n"),
        )
        .unwrap();
        let (error, news) = kept(live.refresh_if_due(start + RECHECK));
        assert!(news);
        assert_eq!(error.setting, "tls.client_crl_files");
        let message = error.message;
        assert!(
            message.starts_with(&format!(
                "{}: certificate revocation list 1 cannot be used",
                pki.path("b.crl").display()
            )),
            "{message}"
        );
        assert!(!message.contains(body), "{message}");

        // Not read again while the files stay as they are. A missing file is tried at every
        // look, but reported once.
        assert!(live.refresh_if_due(start + RECHECK * 2).is_none());
        std::fs::remove_file(pki.path("a.crl")).unwrap();
        let (error, news) = kept(live.refresh_if_due(start + RECHECK * 3));
        assert!(news && error.message.starts_with("cannot read "), "{error}");
        let (_, news) = kept(live.refresh_if_due(start + RECHECK * 4));
        assert!(!news);

        // Repaired.
        pki.write_crl("a.crl", 2, &[]);
        pki.write_crl("b.crl", 2, &[5]);
        assert!(matches!(
            live.refresh_if_due(start + RECHECK * 5),
            Some(Outcome::Replaced { lists: 2 })
        ));
    }

    #[test]
    fn without_lists_nothing_is_watched() {
        let pki = Pki::new();
        let live = pki.live(&[]);
        let first = configs(&live);
        live.refresh_if_due(Instant::now() + RECHECK * 2);
        assert!(same(&first, &configs(&live)));
        assert!(live.in_force().crls.is_empty());
    }
}
