//! The statement time limit (`store.statement_timeout_ms`): a deliberately expensive search is
//! stopped by the database itself, the client gets a 503 `timeout` OperationOutcome that does
//! not show the query, and the connections serve on. The count time limit
//! (`store.count_timeout_ms`): a total that takes too long to count is left out of a page, with
//! a warning, unless the client asks for an accurate one.

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

/// A server holding `organizations` Organizations named `name`.
async fn with_organizations_named(
    backend: Backend,
    name: &str,
    organizations: usize,
) -> TestServer {
    let server = TestServer::start(backend).await;
    let entries: Vec<_> = (0..organizations)
        .map(|_| json!({"resource": {"resourceType": "Organization", "name": name}, "request": {"method": "POST", "url": "Organization"}}))
        .collect();
    let loaded = server
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(loaded.status, StatusCode::OK, "{}", loaded.text);
    server
}

async fn an_expensive_search_is_stopped_and_the_connections_serve_on(backend: Backend) {
    // The data goes in under the default limit, so that the tiny limit below meets queries only.
    let server = with_organizations_named(backend, &"a".repeat(NAME_LENGTH), ORGANIZATIONS).await;
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

/// Organizations whose every name match is costly, as above (`name:contains` tries every
/// position of a [`COSTLY_NAME_LENGTH`] name against a [`COSTLY_NEEDLE`]-character needle): here
/// counting all of them takes 0.4 s on SQLite and 1 s on PostgreSQL, more than ten times the
/// count limit below, and so may a page, which may test every name before it sorts. The names
/// end in `b`, so every one matches. A count without long names takes a millisecond.
const COSTLY_MATCHES: usize = 12;
const COSTLY_NAME_LENGTH: usize = 10_000;
const COSTLY_NEEDLE: usize = 700;
const COUNT_LIMIT: Duration = Duration::from_millis(30);

async fn a_total_too_costly_to_count_is_left_out_unless_asked_for(backend: Backend) {
    let name = format!("{}b", "a".repeat(COSTLY_NAME_LENGTH));
    let server = with_organizations_named(backend, &name, COSTLY_MATCHES).await;
    let (dir, database) = server.stop().await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        // Room for a page (and an accurate count) that tests every name, on a loaded machine.
        config.store.statement_timeout = Some(Duration::from_secs(60));
        config.store.count_timeout = Some(COUNT_LIMIT);
    })
    .await;
    let search = format!(
        "Organization?name:contains={}b&_count=5",
        "a".repeat(COSTLY_NEEDLE)
    );

    let total_warning = |bundle: &serde_json::Value| {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "outcome")
            .flat_map(|e| {
                e["resource"]["issue"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|issue| {
                issue["diagnostics"]
                    .as_str()
                    .is_some_and(|text| text.contains("Bundle.total is left out"))
            })
    };

    // Without `_total`, and with `estimate`: the page, without a total, saying why.
    for query in [search.clone(), format!("{search}&_total=estimate")] {
        let page = server.get(&query).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.text);
        assert_eq!(page.body.get("total"), None, "{query}: {}", page.text);
        let matches = page.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .count();
        assert_eq!(matches, 5, "{query}");
        let warning = total_warning(&page.body).unwrap_or_else(|| panic!("{}", page.text));
        assert_eq!(
            (&warning["severity"], &warning["code"]),
            (&json!("warning"), &json!("too-costly"))
        );
        assert!(
            page.body["link"]
                .as_array()
                .unwrap()
                .iter()
                .any(|link| link["relation"] == "next"),
            "{}",
            page.text
        );
    }

    // The page after it does not try again: its link says the total was left out.
    let first = server.get(&search).await;
    let next = first.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .unwrap()
        .to_string();
    let second = server.get(&next).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body.get("total"), None, "{}", second.text);
    assert!(total_warning(&second.body).is_some(), "{}", second.text);

    // Asked for: counted, to the statement limit.
    let accurate = server.get(&format!("{search}&_total=accurate")).await;
    assert_eq!(accurate.body["total"], COSTLY_MATCHES, "{}", accurate.text);
    assert!(total_warning(&accurate.body).is_none());
    let none = server.get(&format!("{search}&_total=none")).await;
    assert_eq!(none.body.get("total"), None);
    assert!(
        total_warning(&none.body).is_none(),
        "not counted, nothing to say"
    );
    let counted = server.get(&format!("{search}&_summary=count")).await;
    assert_eq!(counted.body["total"], COSTLY_MATCHES, "{}", counted.text);
    // A first page holding every match is its own count.
    let whole = server
        .get(&format!("{search}&_count={}", COSTLY_MATCHES + 1))
        .await;
    assert_eq!(whole.body["total"], COSTLY_MATCHES, "{}", whole.text);
    // A cheap total is counted under the same limit.
    let cheap = server.get("Organization?_count=1").await;
    assert_eq!(cheap.body["total"], COSTLY_MATCHES, "{}", cheap.text);

    // In a transaction Bundle (PostgreSQL: a statement stopped inside a transaction aborts it,
    // unless it ran in a savepoint), the search entry is answered the same way and the
    // transaction's write commits.
    let url = search.replace("&_count=5", "&_count=2");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Organization", "name": "written with the search"},
         "request": {"method": "POST", "url": "Organization"}},
        {"request": {"method": "GET", "url": url}},
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let searchset = &reply.body["entry"][1]["resource"];
    assert_eq!(searchset.get("total"), None, "{}", reply.text);
    assert!(total_warning(searchset).is_some(), "{}", reply.text);
    let written = server
        .get("Organization?name=written%20with%20the%20search")
        .await;
    assert_eq!(written.body["total"], 1, "{}", written.text);
}

both_backends!(
    an_expensive_search_is_stopped_and_the_connections_serve_on,
    a_total_too_costly_to_count_is_left_out_unless_asked_for,
);
