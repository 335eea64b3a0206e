//! Revocation lists replaced while the server runs (`tls.client_crl_files`): a new list applies
//! to new handshakes within a few seconds, on HTTPS and on MLLP over TLS, also for a client that
//! would resume a session from before the change; a broken replacement keeps the lists in force.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirvault::hl7v2::mllp::MllpClient;
use fhirvault::tls::PROTOCOL_VERSIONS;
use fhirvault::watch::RECHECK;
use rustls::HandshakeKind;
use rustls::version::{TLS12, TLS13};
use tokio::time::timeout;

use crate::common::pki::{
    HUB_SERIAL, HttpsReply, HttpsRequest, REVOKED_SERIAL, TestPki, request_with,
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

both_backends!(
    a_replaced_list_revokes_without_a_restart,
    a_broken_replacement_keeps_the_lists_in_force
);
