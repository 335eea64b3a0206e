//! WAL checkpoints mostly off the writer's path (SQLite).
//!
//! By default SQLite checkpoints inside a commit: the connection whose commit takes the WAL past
//! 1,000 pages (4 MiB) copies every page of the log back into the database file and fsyncs it
//! before its commit returns. With one writer and group commit that copy lands on every
//! acknowledgement waiting in the batch (measured on the HL7 ingest bench, one message at a time:
//! commits took 20 ms and 50 ms by turns, the 50 ms ones checkpointing; benches/README.md,
//! "ingest").
//!
//! So a task of the store's own copies the log back on a connection of its own: every [`EVERY`]
//! a PASSIVE checkpoint copies what the log holds while the writer goes on appending. Nothing
//! about durability changes: a commit is still acknowledged only once its WAL frames are fsynced.
//!
//! The writer still checkpoints itself, but only past 64 MiB of log
//! ([`WRITER_PRAGMAS`]), and then finds most of the log already copied. That bound is what keeps
//! the WAL from growing without end under sustained writes: the log starts over from its
//! beginning only once all of it is copied back, and the task alone cannot make sure of that. A
//! RESTART checkpoint from the task would have to take the write lock, which the group committer
//! gives up only for moments (measured: under the ingest bench the WAL grew past 400 MiB while
//! such checkpoints kept timing out). `journal_size_limit` cuts the file back when it starts over.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often the log is copied back.
const EVERY: Duration = Duration::from_millis(2000);

/// Set on every connection of a SQLite pool (only the writer's commits write, so only it ever
/// checkpoints): a checkpoint in a commit only once the log holds 16,384 pages (64 MiB of 4 KiB
/// pages), and a WAL file cut back to that size whenever the log starts over.
pub(super) const WRITER_PRAGMAS: [&str; 2] = [
    "PRAGMA wal_autocheckpoint = 16384",
    "PRAGMA journal_size_limit = 67108864",
];

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
            None => match options.connect().await {
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

/// One turn: a passive checkpoint (it never waits for the writer or readers).
async fn checkpoint(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await?;
    Ok(())
}
