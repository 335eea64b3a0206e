//! The statement time limit (`store.statement_timeout_ms`): a deliberately expensive search is
//! stopped by the database itself, the client gets a 503 `timeout` OperationOutcome that does
//! not show the query, and the connections serve on.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, TestServer};

/// Organizations named with this many `a`s, and how many: `name:contains=a…ab` (a needle of
/// [`NEEDLE`] `a`s and a `b`) is `LIKE '%a…ab%'`, which both databases answer by trying every
/// position of every name — tens of millions of character comparisons per row, about 50 ms per
/// row and ten seconds or more in all: far longer than stopping takes even on a loaded machine.
const NAME_LENGTH: usize = 20_000;
const ORGANIZATIONS: usize = 200;
const NEEDLE: usize = 1_500;

async fn an_expensive_search_is_stopped_and_the_connections_serve_on(backend: Backend) {
    // The data goes in under the default limit, so that the tiny limit below meets queries only.
    let server = TestServer::start(backend).await;
    let name = "a".repeat(NAME_LENGTH);
    let entries: Vec<_> = (0..ORGANIZATIONS)
        .map(|_| json!({"resource": {"resourceType": "Organization", "name": name}, "request": {"method": "POST", "url": "Organization"}}))
        .collect();
    let loaded = server
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(loaded.status, StatusCode::OK, "{}", loaded.text);
    let (dir, database) = server.stop().await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.store.statement_timeout = Some(Duration::from_millis(300));
    })
    .await;

    let started = Instant::now();
    let reply = server
        .get(&format!(
            "Organization?name:contains={}b",
            "a".repeat(NEEDLE)
        ))
        .await;
    let elapsed = started.elapsed();
    reply.assert_outcome(StatusCode::SERVICE_UNAVAILABLE, "timeout", "time limit");
    assert_eq!(reply.header("retry-after"), Some("5"));
    for leak in [
        "SELECT",
        "LIKE",
        "search_string",
        "aaaa",
        "interrupt",
        "57014",
    ] {
        assert!(
            !reply.text.contains(leak),
            "the answer shows {leak}: {}",
            reply.text
        );
    }
    // Stopped near the limit (one LIKE over a long name finishes first), where running to the
    // end takes ten seconds or more (longer under load, like the stopping).
    assert!(
        elapsed < Duration::from_secs(8),
        "stopped only after {elapsed:?}"
    );

    // Every connection still works: more requests than the SQLite reader pool has connections,
    // a write, and a count over the same rows.
    for _ in 0..8 {
        let reply = server.get("Organization?_count=1").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    server
        .create(&json!({"resourceType": "Organization", "name": "after the timeout"}))
        .await;
    let count = server.get("Organization?_summary=count").await;
    assert_eq!(count.body["total"], ORGANIZATIONS + 1, "{}", count.text);
}

both_backends!(an_expensive_search_is_stopped_and_the_connections_serve_on);
