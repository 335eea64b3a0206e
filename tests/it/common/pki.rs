//! Certificates made at test time with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, client certificates for a configured hub and for a stranger under the same CA,
//! and one from a CA the server does not trust; and a certificate revocation list of the CA that
//! revokes a second certificate of the hub. Written as PEM files, as an operator would
//! configure them. The CA stays at hand to sign other revocation lists during a test.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fhirvault::config::{HubConfig, TlsConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, SerialNumber,
};
use rustls::{HandshakeKind, SupportedProtocolVersion};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::new_ca;

/// The hub in the server's hub table, and the DNS name its certificate carries.
pub const HUB_NAME: &str = "hub-vienna-1";
pub const HUB_SUBJECT: &str = "hub-vienna-1.devices.example";
pub const HUB_ORG: &str = "Organization/org-a";

/// A certificate chain and its key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    /// A client certificate whose DNS name is the configured hub's subject.
    pub hub: Identity,
    /// Issued by the same CA, for a name no hub has.
    pub stranger: Identity,
    /// Issued by a CA the server does not know, for the hub's name.
    pub impostor: Identity,
    /// Another certificate of the hub, which `crl.pem` revokes (a lost or replaced hub).
    pub revoked_hub: Identity,
    /// Another key pair than the server certificate's (for the key-mismatch start-up error).
    pub other_key_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// The serial number of [`TestPki::revoked_hub`], which the CRL lists.
pub const REVOKED_SERIAL: u64 = 0x0b0b_0001;
/// The serial number of [`TestPki::hub`], for lists that revoke it.
pub const HUB_SERIAL: u64 = 0x0b0b_0002;

fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Identity {
    issue_numbered(issuer, names, usage, None)
}

fn issue_numbered(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    serial: Option<u64>,
) -> Identity {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.serial_number = serial.map(SerialNumber::from);
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let certificate = params.signed_by(&key, issuer).expect("certificate");
    Identity {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = new_ca("fhirvault test CA");
        let server = issue(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let hub = issue_numbered(
            &ca,
            &[HUB_SUBJECT],
            ExtendedKeyUsagePurpose::ClientAuth,
            Some(HUB_SERIAL),
        );
        let stranger = issue(
            &ca,
            &["stranger.devices.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let impostor = issue(
            &new_ca("some other CA"),
            &[HUB_SUBJECT],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let other_key_pem = KeyPair::generate().expect("key").serialize_pem();
        let revoked_hub = issue_numbered(
            &ca,
            &[HUB_SUBJECT],
            ExtendedKeyUsagePurpose::ClientAuth,
            Some(REVOKED_SERIAL),
        );
        let pki = TestPki {
            dir,
            ca_pem: ca.pem(),
            hub,
            stranger,
            impostor,
            revoked_hub,
            other_key_pem,
            ca,
        };
        for (file, content) in [
            ("ca.pem", pki.ca_pem.clone()),
            ("server.pem", server.cert_pem),
            ("server-key.pem", server.key_pem),
            ("crl.pem", pki.crl_pem(1, &[REVOKED_SERIAL])),
        ] {
            pki.write(file, content);
        }
        pki
    }

    /// Writes `content` to `file` in the test's directory (in place, as `cp` does).
    pub fn write(&self, file: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.path(file), content).expect("write test file");
    }

    /// A revocation list of the CA, PEM, numbered `number`, that revokes the certificates with
    /// the serial numbers `serials`.
    pub fn crl_pem(&self, number: u64, serials: &[u64]) -> String {
        super::ca::crl_pem(&self.ca, number, serials)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Server TLS without client certificates.
    pub fn server_config(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.pem"),
            key_file: self.path("server-key.pem"),
            client_ca_file: None,
            client_crl_files: Vec::new(),
            hubs: Vec::new(),
        }
    }

    /// Server TLS with client certificates under our CA and the one hub.
    pub fn mutual_config(&self) -> TlsConfig {
        TlsConfig {
            client_ca_file: Some(self.path("ca.pem")),
            hubs: vec![HubConfig {
                name: HUB_NAME.into(),
                subject: HUB_SUBJECT.into(),
                org: Some(HUB_ORG.into()),
            }],
            ..self.server_config()
        }
    }

    /// [`TestPki::mutual_config`] with the CA's revocation list, which revokes `revoked_hub`.
    pub fn revoking_config(&self) -> TlsConfig {
        self.config_with_crl("crl.pem")
    }

    /// [`TestPki::mutual_config`] with the revocation list in `file` (see [`TestPki::crl_pem`]).
    pub fn config_with_crl(&self, file: &str) -> TlsConfig {
        TlsConfig {
            client_crl_files: vec![self.path(file)],
            ..self.mutual_config()
        }
    }

    /// A rustls client configuration trusting our CA, speaking `versions`, presenting `identity`.
    pub fn client_config(
        &self,
        identity: Option<&Identity>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let identity = identity.map(|i| (i.cert_pem.as_bytes(), i.key_pem.as_bytes()));
        fhirvault::tls::client_config(self.ca_pem.as_bytes(), identity, versions)
            .expect("client config")
    }

    pub fn mllp_client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_config(identity, fhirvault::tls::PROTOCOL_VERSIONS))
    }

    /// An HTTPS client configuration (ALPN h2 and http/1.1); used for several requests, it
    /// resumes the TLS session of an earlier one where the server lets it.
    pub fn https_client_config(
        &self,
        identity: Option<&Identity>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut config = self.client_config(identity, versions);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// GET `path` over HTTPS from the server at `addr`, with a client speaking `versions` and
    /// presenting `identity`, offering h2 and http/1.1. One request per connection.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        identity: Option<&Identity>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> io::Result<HttpsReply> {
        self.request(
            addr,
            HttpsRequest {
                method: hyper::Method::GET,
                path,
                token: None,
                body: None,
            },
            identity,
            versions,
        )
        .await
    }

    /// Any request over HTTPS, with an optional bearer token and body.
    pub async fn request(
        &self,
        addr: SocketAddr,
        request: HttpsRequest<'_>,
        identity: Option<&Identity>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> io::Result<HttpsReply> {
        request_with(&self.https_client_config(identity, versions), addr, request).await
    }
}

/// A request over HTTPS on a new connection made with `config` ([`TestPki::https_client_config`]).
pub async fn request_with(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    request: HttpsRequest<'_>,
) -> io::Result<HttpsReply> {
    let HttpsRequest {
        method,
        path,
        token,
        body,
    } = request;
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let h2 = tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .header("host", format!("localhost:{}", addr.port()));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let (content_type, bytes) = body.unwrap_or(("application/fhir+json", Vec::new()));
    let request = builder
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(bytes)))
        .map_err(io::Error::other)?;
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(connection);
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(connection);
        sender.send_request(request).await
    }
    .map_err(io::Error::other)?;
    let (status, version) = (response.status(), response.version());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes()
        .to_vec();
    Ok(HttpsReply {
        status,
        version,
        body,
        resumed,
    })
}

/// What [`TestPki::request`] sends besides the TLS identity.
pub struct HttpsRequest<'a> {
    pub method: hyper::Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    /// Content type and bytes.
    pub body: Option<(&'a str, Vec<u8>)>,
}

/// A response over HTTPS, read whole.
#[derive(Debug)]
pub struct HttpsReply {
    pub status: hyper::StatusCode,
    pub version: hyper::Version,
    pub body: Vec<u8>,
    /// Whether the TLS session of an earlier connection was resumed.
    pub resumed: bool,
}

impl HttpsReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}
