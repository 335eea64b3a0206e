//! WAL checkpoints off the writer's path (SQLite).
//!
//! By default SQLite checkpoints inside a commit: the connection whose commit takes the WAL past
//! 1,000 pages copies every page of the log back into the database file and fsyncs it before its
//! commit returns. With one writer and group commit that copy lands on every acknowledgement
//! waiting in the batch (measured on the HL7 ingest bench, one message at a time: commits took
//! 20 ms and 50 ms by turns, the 50 ms ones checkpointing; benches/README.md, "ingest").
//!
//! So the store's writer never checkpoints (`wal_autocheckpoint = 0`, [`WRITER_PRAGMAS`]), and
//! a task of the store's own does it on a connection of its own: every [`EVERY`] a PASSIVE
//! checkpoint copies what the log holds while the writer goes on appending. Nothing about
//! durability changes: a commit is still acknowledged only once its WAL frames are fsynced.
//!
//! A passive checkpoint never waits, so under sustained writes it may never catch up with the
//! end of the log, and the log starts over from its beginning only once it has. When the log
//! holds more than [`RESTART_PAGES`] pages the task takes a RESTART checkpoint instead: it waits
//! for the writer's transaction to end, holds the next one back while it copies the rest, and
//! lets the log start over, so the WAL file stays bounded (`journal_size_limit` truncates it to
//! that size when it restarts).

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often the log is copied back.
const EVERY: Duration = Duration::from_millis(2000);

/// Log length (pages) beyond which the writer is held back so that the log can start over.
/// 16,384 pages of 4 KiB: 64 MiB.
const RESTART_PAGES: i64 = 16_384;

/// Set on every connection that writes: no checkpoint in its commits, and a WAL file cut back
/// to [`RESTART_PAGES`] pages whenever the log starts over.
pub(super) const WRITER_PRAGMAS: [&str; 2] = [
    "PRAGMA wal_autocheckpoint = 0",
    "PRAGMA journal_size_limit = 67108864",
];

/// How long a RESTART checkpoint waits for readers and the writer before it gives up until the
/// next turn. The writer is held back for at most this long.
const RESTART_WAIT_MS: i64 = 1_000;

/// The background checkpointer of one SQLite database. It stops when [`Checkpointer::stop`] is
/// called or the last handle is dropped.
pub(super) struct Checkpointer {
    stop: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Start checkpointing the database `options` open, on a connection of its own.
    pub(super) fn start(options: AnyConnectOptions) -> Checkpointer {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run(options, stop.clone()));
        Checkpointer {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stop and wait for the task (and its connection) to end.
    pub(super) async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // A permit is kept if the task is not waiting right now, so it ends at its next turn.
        self.stop.notify_one();
    }
}

async fn run(options: AnyConnectOptions, stop: Arc<Notify>) {
    let mut conn: Option<AnyConnection> = None;
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let result = match conn.as_mut() {
            Some(open) => checkpoint(open).await,
            None => match connect(&options).await {
                Ok(open) => checkpoint(conn.insert(open)).await,
                Err(error) => Err(error),
            },
        };
        if let Err(error) = result {
            tracing::warn!(%error, "WAL checkpoint failed; tried again shortly");
            // Start from a fresh connection next turn.
            if let Some(broken) = conn.take() {
                let _ = broken.close().await;
            }
        }
    }
    if let Some(open) = conn {
        let _ = open.close().await;
    }
}

async fn connect(options: &AnyConnectOptions) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = options.connect().await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {RESTART_WAIT_MS}"
    )))
    .await?;
    Ok(conn)
}

/// One turn: a passive checkpoint, and a restarting one when the log has grown too long.
async fn checkpoint(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let (_, log_pages, _) = wal_checkpoint(conn, "PASSIVE").await?;
    if log_pages > RESTART_PAGES {
        let (busy, _, _) = wal_checkpoint(conn, "RESTART").await?;
        if busy != 0 {
            tracing::debug!(
                log_pages,
                "the WAL could not start over (readers or the writer busy); tried again shortly"
            );
        }
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, pages in the log, pages copied back).
async fn wal_checkpoint(
    conn: &mut AnyConnection,
    mode: &str,
) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "PRAGMA wal_checkpoint({mode})"
    )))
    .fetch_one(&mut *conn)
    .await
}
