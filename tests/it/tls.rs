//! TLS on both listeners, with certificates generated at test time ([`TestPki`]): HTTPS over
//! TLS 1.3 and 1.2 (and HTTP/2 by ALPN), plain HTTP and TLS 1.1 refused, client certificates of
//! device hubs over HTTPS and over MLLP, and start-up errors for bad files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json, Router};
use fhirvault::hl7v2::mllp::MllpClient;
use fhirvault::tls::{Acceptor, PROTOCOL_VERSIONS, Peer, ServerTls};
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::common::pki::{HUB_NAME, HUB_ORG, HttpsRequest, Identity, TestPki};
use crate::common::{Backend, TestServer, match_ids};
use crate::hl7v2::{Ack, fixture};

const SVNR: &str = "urn:oid:1.2.40.0.10.1.4.3.1";

/// Bound on anything that waits for the server to close a connection.
const PATIENCE: Duration = Duration::from_secs(10);

/// A TLS handshake with the HTTPS port, offering `versions` and h2/http1.1.
async fn handshake(
    pki: &TestPki,
    addr: SocketAddr,
    versions: &[&'static SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = pki.client_config(None, versions);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_tls_1_3_and_1_2() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(Backend::Sqlite, pki.server_config()).await;

    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let reply = pki
            .get(server.addr, "/health", None, versions)
            .await
            .expect("HTTPS request");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, hyper::Version::HTTP_2, "ALPN h2");
    }
    for (versions, expected) in [
        (&TLS13, ProtocolVersion::TLSv1_3),
        (&TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let stream = handshake(&pki, server.addr, &[versions]).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    }

    // The FHIR API, whose links carry the https:// base URL.
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let metadata = pki
        .get(server.addr, "/fhir/metadata", None, PROTOCOL_VERSIONS)
        .await
        .expect("HTTPS request");
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()["implementation"]["url"], json!(server.base));

    // MLLP speaks TLS too; without a client CA any TLS client may send.
    let mut client =
        MllpClient::connect_tls(server.mllp, "localhost", pki.mllp_client_config(None))
            .await
            .expect("MLLP TLS");
    Ack::parse(
        &client
            .request(&fixture("holter-pcd01.hl7"))
            .await
            .expect("ACK"),
    )
    .assert("AA", &[]);
}

/// A TLS 1.1 ClientHello with no extensions (so no `supported_versions`), as an old client
/// sends it: record header, handshake header, version 3.2, random, no session id, two
/// CBC suites, null compression.
fn tls_1_1_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([0x42; 32]);
    hello.extend([0x00, 0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f, 0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// Everything the server sends until it closes.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    // A reset instead of a clean close is a refusal too.
    let _ = timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_tls_1_1_are_refused() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(Backend::Sqlite, pki.server_config()).await;

    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    let mut old = TcpStream::connect(server.addr).await.unwrap();
    old.write_all(&tls_1_1_client_hello()).await.unwrap();
    let answer = read_until_closed(&mut old).await;
    // An alert record (21), fatal (2), handshake_failure (40; rustls's answer) or
    // protocol_version (70); never a ServerHello (a handshake record, 22).
    assert_eq!(answer.first(), Some(&0x15), "answer {answer:02x?}");
    assert!(
        matches!(answer.get(5..7), Some([0x02, 40 | 70])),
        "answer {answer:02x?}"
    );

    // Failed handshakes leave the listener serving.
    let reply = pki
        .get(server.addr, "/health", None, PROTOCOL_VERSIONS)
        .await
        .expect("HTTPS still served");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_client_certificates_are_optional_but_verified() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(Backend::Sqlite, pki.mutual_config()).await;
    for identity in [None, Some(&pki.hub), Some(&pki.stranger)] {
        let reply = pki
            .get(server.addr, "/health", identity, PROTOCOL_VERSIONS)
            .await
            .expect("served");
        assert_eq!(reply.status, 200);
    }
    // A certificate the client CA did not issue is refused in the handshake.
    let impostor = pki
        .get(
            server.addr,
            "/health",
            Some(&pki.impostor),
            PROTOCOL_VERSIONS,
        )
        .await;
    assert!(
        impostor.is_err(),
        "an unverifiable client certificate was accepted: {impostor:?}"
    );
}

/// With the CA's revocation list (`tls.client_crl_files`), a revoked hub certificate is refused
/// in the handshake, on HTTPS and on MLLP, while the hub's current certificate (and any other
/// certificate of the CA the list does not name) is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused_in_the_handshake() {
    let pki = TestPki::new();
    // Without the list, the revoked certificate is as good as any.
    let server = TestServer::start_tls(Backend::Sqlite, pki.mutual_config()).await;
    assert_eq!(
        pki.get(
            server.addr,
            "/health",
            Some(&pki.revoked_hub),
            PROTOCOL_VERSIONS
        )
        .await
        .expect("served")
        .status,
        200
    );
    drop(server);

    let server = TestServer::start_tls(Backend::Sqlite, pki.revoking_config()).await;
    for identity in [None, Some(&pki.hub), Some(&pki.stranger)] {
        assert_eq!(
            pki.get(server.addr, "/health", identity, PROTOCOL_VERSIONS)
                .await
                .expect("served")
                .status,
            200
        );
    }
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let revoked = pki
            .get(server.addr, "/health", Some(&pki.revoked_hub), versions)
            .await;
        assert!(
            revoked.is_err(),
            "a revoked certificate was served: {revoked:?}"
        );
    }
    let message = fixture("holter-pcd01.hl7");
    assert_mllp_refused(
        server.mllp,
        pki.mllp_client_config(Some(&pki.revoked_hub)),
        &message,
    )
    .await;
    let mut hub = MllpClient::connect_tls(
        server.mllp,
        "localhost",
        pki.mllp_client_config(Some(&pki.hub)),
    )
    .await
    .expect("hub connects");
    Ack::parse(&hub.request(&message).await.expect("ACK")).assert("AA", &[]);
}

/// The peer of each request, as a handler reads it: `Extension<Peer>`.
async fn show_peer(Extension(peer): Extension<Peer>) -> Json<Value> {
    let hub = peer
        .hub
        .map(|hub| json!({"name": hub.name, "org": hub.org}));
    Json(json!({"addr": peer.addr.to_string(), "tls": peer.tls, "hub": hub}))
}

/// Serves a router of one route, `/peer`, with `acceptor`, on a fresh port.
async fn serve_peer_route(acceptor: Acceptor) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Router::new().route("/peer", get(show_peer));
    tokio::spawn(fhirvault::server::http::serve(
        listener,
        acceptor,
        router,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_its_peer_and_hub() {
    let (addr, _stop) = serve_peer_route(Acceptor::plain()).await;
    let plain: Value = reqwest::get(format!("http://{addr}/peer"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (plain["tls"].clone(), plain["hub"].clone()),
        (json!(false), Value::Null)
    );
    assert!(
        plain["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{plain}"
    );

    let pki = TestPki::new();
    let tls = ServerTls::load(Some(&pki.mutual_config()))
        .unwrap()
        .unwrap();
    let (addr, _stop) = serve_peer_route(tls.http_acceptor()).await;
    let peer = async |identity: Option<&Identity>| {
        pki.get(addr, "/peer", identity, PROTOCOL_VERSIONS)
            .await
            .expect("served")
            .json()
    };
    let hub = peer(Some(&pki.hub)).await;
    assert_eq!(hub["tls"], true);
    assert_eq!(hub["hub"], json!({"name": HUB_NAME, "org": HUB_ORG}));
    // A verified certificate that is no hub's, and none at all: no hub; bearer rules apply.
    assert_eq!(peer(Some(&pki.stranger)).await["hub"], Value::Null);
    assert_eq!(peer(None).await["hub"], Value::Null);
}

/// The MLLP connection with `config` is closed without an answer to `message`: refused in the
/// handshake, or (TLS 1.3 finishes the client's side first) right after it.
async fn assert_mllp_refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>, message: &[u8]) {
    let Ok(mut client) = MllpClient::connect_tls(addr, "localhost", config).await else {
        return;
    };
    let answer = timeout(PATIENCE, client.request(message))
        .await
        .expect("the server closes");
    assert!(
        answer.is_err(),
        "answered: {:?}",
        answer.map(|a| String::from_utf8_lossy(&a).into_owned())
    );
}

async fn mllp_over_tls_takes_messages_from_hubs_only(backend: Backend) {
    let pki = TestPki::new();
    let server = TestServer::start_tls(backend, pki.mutual_config()).await;
    let message = fixture("holter-pcd01.hl7");
    let admin = server.token("admin", "user/*.cruds", None, None);
    let patients = async || {
        let path = format!("/fhir/Patient?identifier={SVNR}|1234010180");
        let search = HttpsRequest {
            method: Method::GET,
            path: &path,
            token: Some(&admin),
            body: None,
        };
        match_ids(
            &pki.request(server.addr, search, None, PROTOCOL_VERSIONS)
                .await
                .expect("search")
                .json(),
        )
    };

    // Not a hub: a certificate of our CA for another name, none, one of another CA.
    for identity in [Some(&pki.stranger), None, Some(&pki.impostor)] {
        assert_mllp_refused(server.mllp, pki.mllp_client_config(identity), &message).await;
    }
    // Plain MLLP to the TLS port.
    let mut plain = MllpClient::connect(server.mllp).await.unwrap();
    assert!(
        timeout(PATIENCE, plain.request(&message))
            .await
            .expect("closed")
            .is_err()
    );
    assert!(patients().await.is_empty(), "a refused message was stored");

    // The hub: acknowledged after the commit, and stored.
    let mut hub = MllpClient::connect_tls(
        server.mllp,
        "localhost",
        pki.mllp_client_config(Some(&pki.hub)),
    )
    .await
    .expect("hub connects");
    let ack = Ack::parse(&hub.request(&message).await.expect("ACK"));
    ack.assert("AA", &[]);
    assert_eq!(patients().await.len(), 1);
}

/// Over HTTPS a hub's certificate stands in for a token: it may send HL7 v2 and read its own
/// Devices, nothing else; any other certificate without a token is a 401.
async fn a_hub_certificate_may_only_ingest(backend: Backend) {
    let pki = TestPki::new();
    let server = TestServer::start_tls(backend, pki.mutual_config()).await;
    let message = fixture("holter-pcd01.hl7");
    let send = |identity| {
        let request = HttpsRequest {
            method: Method::POST,
            path: "/hl7v2",
            token: None,
            body: Some(("x-application/hl7-v2+er7", message.clone())),
        };
        pki.request(server.addr, request, identity, PROTOCOL_VERSIONS)
    };
    let hub = send(Some(&pki.hub)).await.expect("served");
    assert_eq!(hub.status, 200, "{}", String::from_utf8_lossy(&hub.body));
    assert!(
        String::from_utf8_lossy(&hub.body).contains("MSA|AA|"),
        "{}",
        String::from_utf8_lossy(&hub.body)
    );
    assert_eq!(send(Some(&pki.stranger)).await.expect("served").status, 401);
    assert_eq!(send(None).await.expect("served").status, 401);
    let read = |path: &'static str| {
        pki.request(
            server.addr,
            HttpsRequest {
                method: Method::GET,
                path,
                token: None,
                body: None,
            },
            Some(&pki.hub),
            PROTOCOL_VERSIONS,
        )
    };
    assert_eq!(read("/fhir/Patient").await.expect("served").status, 403);
    assert_eq!(read("/fhir/Observation").await.expect("served").status, 403);
    assert_eq!(read("/fhir/Device").await.expect("served").status, 200);
}

async fn a_stalled_mllp_handshake_times_out_and_holds_up_no_one(backend: Backend) {
    let pki = TestPki::new();
    let (dir, database) = crate::common::fresh_store(backend).await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.tls = Some(pki.mutual_config());
        config.hl7v2.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = TcpStream::connect(server.mllp).await.unwrap();

    let mut hub = MllpClient::connect_tls(
        server.mllp,
        "localhost",
        pki.mllp_client_config(Some(&pki.hub)),
    )
    .await
    .expect("hub connects");
    Ack::parse(
        &hub.request(&fixture("holter-pcd01.hl7"))
            .await
            .expect("ACK"),
    )
    .assert("AA", &[]);

    // The silent client never sent a ClientHello; the idle timeout ended its handshake.
    assert!(read_until_closed(&mut silent).await.is_empty());
}

both_backends!(
    a_hub_certificate_may_only_ingest,
    mllp_over_tls_takes_messages_from_hubs_only,
    a_stalled_mllp_handshake_times_out_and_holds_up_no_one
);

#[test]
fn start_up_errors_name_the_setting() {
    let pki = TestPki::new();
    assert!(
        ServerTls::load(Some(&pki.mutual_config()))
            .unwrap()
            .is_some_and(|tls| tls.client_auth())
    );

    std::fs::write(pki.path("other-key.pem"), &pki.other_key_pem).unwrap();
    let mismatched = fhirvault::config::TlsConfig {
        key_file: pki.path("other-key.pem"),
        ..pki.server_config()
    };
    let error = ServerTls::load(Some(&mismatched)).unwrap_err();
    assert_eq!(error.setting, "tls.key_file");
    assert!(
        error
            .message
            .contains("is not the private key of the certificate"),
        "{error}"
    );

    let no_ca = fhirvault::config::TlsConfig {
        client_ca_file: Some(pki.path("missing.pem")),
        ..pki.mutual_config()
    };
    let error = ServerTls::load(Some(&no_ca)).unwrap_err();
    assert_eq!(error.setting, "tls.client_ca_file");
    assert!(error.to_string().contains("cannot read"), "{error}");

    // A file that holds no revocation list, and a list that is not one.
    let no_list = fhirvault::config::TlsConfig {
        client_crl_files: vec![pki.path("server-key.pem")],
        ..pki.mutual_config()
    };
    assert_eq!(
        ServerTls::load(Some(&no_list)).unwrap_err().setting,
        "tls.client_crl_files"
    );
    std::fs::write(pki.path("garbage.crl"), [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
    let garbage = fhirvault::config::TlsConfig {
        client_crl_files: vec![pki.path("garbage.crl")],
        ..pki.mutual_config()
    };
    assert_eq!(
        ServerTls::load(Some(&garbage)).unwrap_err().setting,
        "tls.client_crl_files"
    );
    assert!(ServerTls::load(Some(&pki.revoking_config())).is_ok());

    // A key file where the certificate should be: no certificate in it.
    let swapped = fhirvault::config::TlsConfig {
        cert_file: pki.path("server-key.pem"),
        ..pki.server_config()
    };
    assert_eq!(
        ServerTls::load(Some(&swapped)).unwrap_err().setting,
        "tls.cert_file"
    );
}
