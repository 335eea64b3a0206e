//! Revocation lists replaced while the server runs (`tls.client_crl_files`): a new list applies
//! to new handshakes within a few seconds, on HTTPS and on MLLP over TLS, also for a client that
//! would resume a session from before the change, and closes the connections it revokes that
//! were open before; a broken replacement keeps the lists in force; a list that is not the CA's
//! (its signature does not verify) lets no client in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirvault::hl7v2::mllp::MllpClient;
use fhirvault::tls::PROTOCOL_VERSIONS;
use fhirvault::watch::RECHECK;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::common::pki::{
    HUB_SERIAL, HttpsReply, HttpsRequest, Identity, REVOKED_SERIAL, TestPki, request_with,
};
use crate::common::{Backend, TestServer};
use crate::hl7v2::{Ack, fixture};

/// How long a replaced list may take to apply: [`RECHECK`], and slack for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(15);
/// Between two attempts while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Bound on one connection attempt. A refused connection fails at once and a served request is
/// answered in milliseconds; but once, in a run of the whole suite, a test client's future went
/// on waiting after its connection was gone (no socket was left open in the process, so it
/// waited for nothing the server could still do). Such an attempt says nothing either way, and
/// is made again.
const ATTEMPT: Duration = Duration::from_secs(5);

const CRL_FILE: &str = "hubs.crl";

/// The outcome of `attempt`, made again when it is stuck for longer than [`ATTEMPT`].
async fn outcome<T>(what: &str, attempt: impl AsyncFn() -> T) -> T {
    for _ in 0..3 {
        if let Ok(outcome) = timeout(ATTEMPT, attempt()).await {
            return outcome;
        }
        eprintln!("{what}: an attempt stuck for {ATTEMPT:?}; trying again");
    }
    panic!("{what}: three attempts stuck for {ATTEMPT:?} each");
}

/// GET /health on a new connection made with `config`: the reply, or `None` when the
/// connection was refused.
async fn health(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Option<HttpsReply> {
    outcome("HTTPS", async || {
        let request = HttpsRequest {
            method: hyper::Method::GET,
            path: "/health",
            token: None,
            body: None,
        };
        request_with(config, addr, request).await.ok()
    })
    .await
}

fn served(reply: Option<HttpsReply>) -> bool {
    reply.is_some_and(|reply| reply.status == 200)
}

/// Whether an MLLP connection made with `config` gets `message` acknowledged. A refused client
/// fails the handshake, or (TLS 1.3 finishes the client's side first) is closed right after it.
/// Also whether the connection resumed an earlier session.
async fn mllp_acknowledged(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    message: &[u8],
) -> (bool, bool) {
    outcome("MLLP", async || {
        let Ok(mut client) = MllpClient::connect_tls(addr, "localhost", Arc::clone(config)).await
        else {
            return (false, false);
        };
        let resumed = client.get_mut().get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        let acknowledged = match client.request(message).await {
            Ok(ack) => {
                Ack::parse(&ack).assert("AA", &[]);
                true
            }
            Err(_) => false,
        };
        (acknowledged, resumed)
    })
    .await
}

/// Tries `check` until it holds, for at most [`PATIENCE`]; how long that took.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: still not so after {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A hub that is served over HTTPS and MLLP is refused by both within a few seconds of its
/// certificate's serial number appearing in the list file, without a restart; the other
/// certificates of the CA are served as before.
async fn a_replaced_list_revokes_without_a_restart(backend: Backend) {
    let pki = TestPki::new();
    pki.write(CRL_FILE, pki.crl_pem(1, &[]));
    let server = TestServer::start_tls(backend, pki.config_with_crl(CRL_FILE)).await;
    let message = fixture("holter-pcd01.hl7");

    // One client configuration per protocol version and listener, each used for every
    // connection, so that each connection after the first offers to resume a session from
    // before the change: a resumed session is not verified again, and must not get through.
    let https = [&TLS13, &TLS12].map(|version| pki.https_client_config(Some(&pki.hub), &[version]));
    let mllp = pki.mllp_client_config(Some(&pki.hub));
    for config in &https {
        assert!(served(health(config, server.addr).await));
        let again = health(config, server.addr).await.expect("served again");
        assert!(again.resumed, "the client resumes its session");
    }
    assert_eq!(
        mllp_acknowledged(server.mllp, &mllp, &message).await,
        (true, false)
    );
    assert_eq!(
        mllp_acknowledged(server.mllp, &mllp, &message).await,
        (true, true),
        "the MLLP client resumes its session"
    );

    // The operator publishes a list that revokes the hub's certificate, in place.
    pki.write(CRL_FILE, pki.crl_pem(2, &[HUB_SERIAL]));
    for (config, version) in https.iter().zip(["TLS 1.3", "TLS 1.2"]) {
        let took = eventually(&format!("HTTPS over {version} refused"), async || {
            !served(health(config, server.addr).await)
        })
        .await;
        assert!(took <= RECHECK + Duration::from_secs(5), "{took:?}");
    }
    eventually("MLLP refused", async || {
        !mllp_acknowledged(server.mllp, &mllp, &message).await.0
    })
    .await;

    // Refused for good, while another certificate of the CA is served.
    for config in &https {
        assert!(!served(health(config, server.addr).await));
    }
    let fresh = pki.mllp_client_config(Some(&pki.hub));
    assert!(!mllp_acknowledged(server.mllp, &fresh, &message).await.0);
    let stranger = pki.https_client_config(Some(&pki.stranger), PROTOCOL_VERSIONS);
    assert!(served(health(&stranger, server.addr).await));
}

/// A list file replaced by something unusable (a half-written copy, bytes that are no list, an
/// empty file, no file) keeps the lists read before in force: the revoked certificate stays
/// refused and the hub served, through and beyond the time the server takes to notice a change.
/// A good list after that is followed again.
async fn a_broken_replacement_keeps_the_lists_in_force(backend: Backend) {
    let pki = TestPki::new();
    let good = pki.crl_pem(1, &[REVOKED_SERIAL]);
    pki.write(CRL_FILE, &good);
    let server = TestServer::start_tls(backend, pki.config_with_crl(CRL_FILE)).await;
    let message = fixture("holter-pcd01.hl7");
    let hub = || pki.https_client_config(Some(&pki.hub), PROTOCOL_VERSIONS);
    let revoked = || pki.https_client_config(Some(&pki.revoked_hub), PROTOCOL_VERSIONS);
    let as_before = async || {
        served(health(&hub(), server.addr).await)
            && !served(health(&revoked(), server.addr).await)
            && !mllp_acknowledged(
                server.mllp,
                &pki.mllp_client_config(Some(&pki.revoked_hub)),
                &message,
            )
            .await
            .0
    };
    assert!(as_before().await);

    let breakages: [(&str, &dyn Fn()); 4] = [
        ("half-written", &|| {
            pki.write(CRL_FILE, &good[..good.len() / 2])
        }),
        ("not a list", &|| {
            pki.write(CRL_FILE, [0x30, 0x03, 0x02, 0x01, 0x01])
        }),
        ("empty", &|| pki.write(CRL_FILE, "")),
        ("removed", &|| {
            std::fs::remove_file(pki.path(CRL_FILE)).expect("remove")
        }),
    ];
    for (what, break_file) in breakages {
        break_file();
        // Looked at throughout: the server reads the file again at a handshake once RECHECK
        // has passed, so within this window it has read the broken one.
        let until = Instant::now() + RECHECK * 2 + Duration::from_millis(500);
        while Instant::now() < until {
            assert!(
                as_before().await,
                "{what}: the lists read before are in force"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    // Still followed: a good list that revokes the hub too applies.
    pki.write(CRL_FILE, pki.crl_pem(2, &[REVOKED_SERIAL, HUB_SERIAL]));
    eventually("the repaired list applies", async || {
        !served(health(&hub(), server.addr).await)
    })
    .await;
    assert!(!served(health(&revoked(), server.addr).await));
}

/// An HTTP/1.1 connection kept open over TLS, as a client with keep-alive holds it.
struct KeptOpen {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    /// Ends when the server closes the connection.
    connection: JoinHandle<()>,
    port: u16,
}

impl KeptOpen {
    async fn connect(pki: &TestPki, identity: &Identity, addr: SocketAddr) -> KeptOpen {
        let mut config = pki.client_config(Some(identity), PROTOCOL_VERSIONS);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        KeptOpen {
            sender,
            connection,
            port: addr.port(),
        }
    }

    /// GET /health on this connection: whether it was answered 200.
    async fn healthy(&mut self) -> bool {
        if self.sender.ready().await.is_err() {
            return false;
        }
        let request = hyper::Request::get(format!("https://localhost:{}/health", self.port))
            .header("host", format!("localhost:{}", self.port))
            .body(Empty::new())
            .expect("request");
        timeout(ATTEMPT, self.sender.send_request(request))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|response| response.status() == 200)
    }
}

/// Whether the server has closed `client`'s connection: a read ends without a reply.
async fn closed_by_server(
    client: &mut MllpClient<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
) -> bool {
    matches!(
        timeout(PATIENCE, client.receive()).await,
        Ok(Ok(None) | Err(_))
    )
}

/// Connections a hub opened before its certificate was revoked are closed within a few seconds
/// of the list that revokes it, idle ones too, over HTTPS and MLLP; the connections of other
/// certificates stay open and served.
async fn a_new_list_closes_the_connections_it_revokes(backend: Backend) {
    let pki = TestPki::new();
    pki.write(CRL_FILE, pki.crl_pem(1, &[]));
    let server = TestServer::start_tls(backend, pki.config_with_crl(CRL_FILE)).await;
    let message = fixture("holter-pcd01.hl7");

    let mut hub_https = KeptOpen::connect(&pki, &pki.hub, server.addr).await;
    let mut stranger_https = KeptOpen::connect(&pki, &pki.stranger, server.addr).await;
    assert!(hub_https.healthy().await && stranger_https.healthy().await);
    // The hub's second certificate is not in the lists yet: it is a hub like the first.
    let acknowledged_client = async |identity| {
        let config = pki.mllp_client_config(Some(identity));
        let mut client = MllpClient::connect_tls(server.mllp, "localhost", config)
            .await
            .expect("MLLP over TLS");
        Ack::parse(&client.request(&message).await.expect("ACK")).assert("AA", &[]);
        client
    };
    let mut hub_mllp = acknowledged_client(&pki.hub).await;
    let mut second_mllp = acknowledged_client(&pki.revoked_hub).await;

    // The list revokes the first certificate; nobody connects meanwhile: the server looks at
    // the file on its own, and closes the open connections of that certificate, idle as they are.
    let revoked_at = Instant::now();
    pki.write(CRL_FILE, pki.crl_pem(2, &[HUB_SERIAL]));
    timeout(PATIENCE, &mut hub_https.connection)
        .await
        .expect("the revoked hub's HTTPS connection is closed")
        .expect("connection task");
    assert!(closed_by_server(&mut hub_mllp).await, "MLLP closed");
    let took = revoked_at.elapsed();
    assert!(took <= RECHECK * 2 + Duration::from_secs(5), "{took:?}");
    assert!(!hub_https.healthy().await);

    // Other certificates keep their connections.
    assert!(!stranger_https.connection.is_finished());
    assert!(
        stranger_https.healthy().await,
        "another client's connection is served"
    );
    let ack = second_mllp
        .request(&message)
        .await
        .expect("the other hub's ACK");
    Ack::parse(&ack).assert("AA", &[]);
}

/// A list with the CA's name that the CA did not sign (a mistake, or a forgery that would
/// unrevoke a certificate) is no list of that CA: client certificates of the CA are refused
/// (fail closed) until a list it signed is in place again.
async fn a_list_the_ca_did_not_sign_lets_no_one_in(backend: Backend) {
    let pki = TestPki::new();
    pki.write(CRL_FILE, pki.crl_pem(1, &[REVOKED_SERIAL]));
    let server = TestServer::start_tls(backend, pki.config_with_crl(CRL_FILE)).await;
    let hub = || pki.https_client_config(Some(&pki.hub), PROTOCOL_VERSIONS);
    let revoked = || pki.https_client_config(Some(&pki.revoked_hub), PROTOCOL_VERSIONS);
    assert!(served(health(&hub(), server.addr).await));
    assert!(!served(health(&revoked(), server.addr).await));

    pki.write(CRL_FILE, pki.forged_crl_pem(2, &[]));
    eventually("the hub refused under the forged list", async || {
        !served(health(&hub(), server.addr).await)
    })
    .await;
    assert!(
        !served(health(&revoked(), server.addr).await),
        "the forged list does not unrevoke"
    );

    pki.write(CRL_FILE, pki.crl_pem(3, &[REVOKED_SERIAL]));
    eventually("the hub served again under the CA's list", async || {
        served(health(&hub(), server.addr).await)
    })
    .await;
    assert!(!served(health(&revoked(), server.addr).await));
}

both_backends!(
    a_replaced_list_revokes_without_a_restart,
    a_broken_replacement_keeps_the_lists_in_force,
    a_new_list_closes_the_connections_it_revokes,
    a_list_the_ca_did_not_sign_lets_no_one_in
);
