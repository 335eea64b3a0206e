//! The read journal (`audit.read_records = "journal"`) on real databases and real files: reads
//! answered over HTTP are in the trail the moment an auditor looks, and the chains verify; a
//! journal a stopped server left is drained at the next start, holds no plaintext, ignores a
//! write cut short, is not written twice, and keeps a segment whose frame was altered; reads
//! whose records the journal cannot take are written to the database instead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fhirvault::audit::journal::{JOURNAL_DIR, ReadJournal, Registrar, drain_journal};
use fhirvault::audit::{AuditRecord, Entity, Event, Outcome, RestInteraction};
use fhirvault::auth::Caller;
use fhirvault::config::{Config, ReadRecords};
use fhirvault::service::Service;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

use crate::audit_chain::fhirvault;
use crate::common::{Backend, TestServer, fresh_store};

both_backends!(
    journaled_reads_are_in_the_trail_when_an_auditor_looks,
    a_journal_left_behind_is_drained_once_at_the_next_start,
    segments_deleted_or_cut_short_before_the_drain_are_reported,
    the_newest_segment_deleted_after_a_crash_is_reported_once,
);

/// Put into query entities; must never appear in plain text on disk.
const MARKER: &str = "name=Ottokar-Journal-5521";
/// 2020-01-02T03:04:05Z: the `date` of the records this file writes itself.
const RECORDED: i64 = 1_577_934_245_000_000;

fn journaled(config: &mut Config) {
    config.audit.read_records = ReadRecords::Journal;
}

async fn auditor_count(server: &TestServer, query: &str) -> u64 {
    let auditor = server.token("auditor", "user/*.rs", None, None);
    let reply = server
        .request_as(
            &auditor,
            Method::GET,
            &format!("AuditEvent?{query}&_summary=count"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    reply.body["total"].as_u64().expect("total")
}

async fn journaled_reads_are_in_the_trail_when_an_auditor_looks(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    let server = TestServer::start_with(backend, dir, database, journaled).await;
    let (obs, _) = server
        .create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72, "unit": "/min"}}))
        .await;
    let path = format!("Observation/{obs}");
    let reads = futures::future::join_all((0..12).map(|_| server.get(&path))).await;
    assert!(reads.iter().all(|r| r.status == StatusCode::OK));
    // Looked for at once, well inside the journal's drain interval.
    assert_eq!(
        auditor_count(&server, &format!("entity={path}&subtype=read")).await,
        12
    );
    let (dir, database) = server.stop().await;
    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        segments(dir.path()).is_empty(),
        "a stopped server leaves an empty journal: {:?}",
        segments(dir.path())
    );
}

fn records(n: usize) -> Vec<AuditRecord> {
    let caller = Arc::new(Caller::server());
    (0..n)
        .map(|_| AuditRecord {
            recorded: RECORDED,
            event: Event::Rest(RestInteraction::SearchType),
            outcome: Outcome::Success,
            outcome_desc: None,
            caller: Some(caller.clone()),
            address: Some("127.0.0.1".into()),
            purpose: vec!["TREAT".into()],
            break_glass: false,
            entities: vec![Entity::Query {
                query: MARKER.into(),
                resource_type: Some("Patient".into()),
            }],
        })
        .collect()
}

/// The segments in the journal folder, without the empty one prepared to be opened next.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join(JOURNAL_DIR))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|path| path.extension().is_none_or(|e| e != "next"));
    files.sort();
    files
}

async fn stored_audit_events(service: &Service) -> i64 {
    let mut conn = service.reader().await.expect("reader");
    sqlx::query("SELECT COUNT(*) AS n FROM resource_heads WHERE resource_type = 'AuditEvent'")
        .fetch_one(&mut *conn)
        .await
        .expect("count")
        .get::<i64, _>("n")
}

async fn a_journal_left_behind_is_drained_once_at_the_next_start(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    let config = Config::for_dir(dir.path(), Some(database.clone()));
    let service = fhirvault::server::open_service(config, None)
        .await
        .expect("service opens");
    let before = stored_audit_events(&service).await;

    // The journal cannot start a segment (its folder is a file): the records go to the
    // database, and the reads they belong to are not refused.
    let folder = dir.path().join(JOURNAL_DIR);
    std::fs::create_dir_all(&folder).expect("folder");
    let journal = ReadJournal::start(
        dir.path(),
        service.keys.clone(),
        None,
        Registrar::spawn(&service),
    )
    .expect("journal");
    assert!(service.read_journal.set(journal).is_ok());
    std::fs::remove_dir(&folder).expect("remove folder");
    std::fs::write(&folder, b"not a folder").expect("block the folder");
    service
        .audit(records(2))
        .await
        .expect("written to the database");
    assert_eq!(stored_audit_events(&service).await, before + 2);
    std::fs::remove_file(&folder).expect("unblock");
    std::fs::create_dir(&folder).expect("folder again");

    // Two appends, two frames of one segment, durable and sealed: nothing in the database yet.
    service.audit(records(3)).await.expect("journaled");
    service.audit(records(2)).await.expect("journaled");
    assert_eq!(stored_audit_events(&service).await, before + 2);
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let segment = left[0].clone();
    let bytes = std::fs::read(&segment).expect("segment");
    assert!(!String::from_utf8_lossy(&bytes).contains("Ottokar"));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The server stops without draining (as a crash would leave it), in the middle of a write.
    stop_as_a_crash_would(service).await;
    let stem = segment.file_stem().expect("stem").to_owned();
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let mut torn = bytes.clone();
    torn.extend_from_slice(&[0, 0, 1, 0, 7, 7, 7]);
    std::fs::write(&left[0], &torn).expect("cut a write short");

    let server = TestServer::start_with(backend, dir, database, journaled).await;
    let date = "date=2020-01-02T03:04:05Z";
    assert_eq!(
        auditor_count(&server, date).await,
        7,
        "2 written at once, 5 drained"
    );
    assert_eq!(
        losses(&server).await,
        0,
        "the newest segment the journal opened was there: no loss"
    );
    let of_segment = |dir: &Path| {
        segments(dir)
            .into_iter()
            .filter(|s| s.file_stem() == Some(stem.as_os_str()))
            .collect::<Vec<_>>()
    };
    assert!(
        of_segment(server.dir.path()).is_empty(),
        "removed once drained"
    );

    // The same segment again (a crash between its commit and its removal): nothing twice.
    let closed = segment.with_extension("journal");
    std::fs::write(&closed, &bytes).expect("put back");
    assert_eq!(auditor_count(&server, date).await, 7);
    assert!(!closed.exists(), "removed once recognised");

    // Its second frame altered: the first frame is recognised, the segment kept as broken.
    let mut altered = bytes.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    std::fs::write(&closed, &altered).expect("put back altered");
    assert_eq!(auditor_count(&server, date).await, 7);
    assert!(!closed.exists());
    assert!(segment.with_extension("broken").exists());

    chains_verify(server).await;
}

/// A service on a fresh store with a read journal of its own, not served: the tests stop it
/// the way a crash would.
async fn journaled_service(
    backend: Backend,
) -> (tempfile::TempDir, fhirvault::config::DatabaseUrl, Service) {
    let (dir, database) = fresh_store(backend).await;
    let config = Config::for_dir(dir.path(), Some(database.clone()));
    let service = fhirvault::server::open_service(config, None)
        .await
        .expect("service opens");
    let journal = ReadJournal::start(
        dir.path(),
        service.keys.clone(),
        None,
        Registrar::spawn(&service),
    )
    .expect("journal");
    assert!(service.read_journal.set(journal).is_ok());
    (dir, database, service)
}

/// Journal `count` records into a segment of their own and close it (not drained).
async fn closed_segment(service: &Service, count: usize) -> PathBuf {
    let before = segments(service.config.data_dir.as_path());
    service.audit(records(count)).await.expect("journaled");
    service
        .read_journal()
        .expect("journal")
        .close_segment()
        .await;
    let new: Vec<PathBuf> = segments(service.config.data_dir.as_path())
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

/// Segments name the segment before them and its length: one deleted, or one cut short by whole
/// frames (which would otherwise pass for a segment that simply ended there), before the drain
/// took it is reported in the trail itself, and the records that are there are still written.
async fn segments_deleted_or_cut_short_before_the_drain_are_reported(backend: Backend) {
    let (dir, database, service) = journaled_service(backend).await;
    let before = stored_audit_events(&service).await;

    // One segment drained: the drain knows where it got to.
    closed_segment(&service, 1).await;
    drain_journal(&service).await.expect("drain");
    assert_eq!(stored_audit_events(&service).await, before + 1);

    // Three more, closed and not drained: the first deleted, the second cut after its first
    // frame (the one that names the segment before it), the third left alone.
    let deleted = closed_segment(&service, 2).await;
    let cut = closed_segment(&service, 1).await;
    closed_segment(&service, 1).await;
    std::fs::remove_file(&deleted).expect("delete a segment");
    let whole = std::fs::read(&cut).expect("segment");
    let first_frame = 4 + u32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
    std::fs::write(&cut, &whole[..first_frame]).expect("cut whole frames off");

    drain_journal(&service).await.expect("drain");
    // The third segment's record is written, and one AuditEvent for each loss.
    assert_eq!(stored_audit_events(&service).await, before + 1 + 1 + 2);
    stop_as_a_crash_would(service).await;

    let server = TestServer::start_with(backend, dir, database, journaled).await;
    assert_eq!(
        losses(&server).await,
        2,
        "one for the deleted segment, one for the cut"
    );
    chains_verify(server).await;
}

/// The newest segment, which no later segment names, deleted after a crash and before the next
/// start: the database recorded it as opened before any read in it was acknowledged, so the
/// start reports it, once.
async fn the_newest_segment_deleted_after_a_crash_is_reported_once(backend: Backend) {
    let (dir, database, service) = journaled_service(backend).await;
    closed_segment(&service, 1).await;
    drain_journal(&service).await.expect("drain");

    // Acknowledged in the open segment; then the server dies, and the segment is deleted.
    service.audit(records(2)).await.expect("journaled");
    stop_as_a_crash_would(service).await;
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_file(&left[0]).expect("delete the newest segment");

    let server = TestServer::start_with(backend, dir, database, journaled).await;
    assert_eq!(losses(&server).await, 1);
    let (dir, database) = server.stop().await;
    let server = TestServer::start_with(backend, dir, database, journaled).await;
    assert_eq!(losses(&server).await, 1, "reported once");
    chains_verify(server).await;
}

/// Stop `server` and check that `fhirvault audit verify` finds every chain intact.
async fn chains_verify(server: TestServer) {
    let (dir, database) = server.stop().await;
    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// Stop `service` without draining its journal, as a crash leaves it, and give its journal's
/// thread a moment to finish.
async fn stop_as_a_crash_would(service: Service) {
    service.store.close().await;
    drop(service);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The AuditEvents that report reads lost from the journal.
async fn losses(server: &TestServer) -> u64 {
    auditor_count(server, "outcome=8&subtype=verify").await
}
