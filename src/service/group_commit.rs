//! Group commit for the single-writer SQLite store.
//!
//! With `synchronous = FULL` every commit waits for an fsync (about 1 ms here), which caps one
//! writer at about a thousand commits a second however fast the rest is. The committer task takes
//! every write job that is waiting, runs each inside its own savepoint of one shared transaction
//! (a failing job rolls back to its savepoint and fails alone), commits once, and only then
//! answers each job: an acknowledged write is always durable, and N concurrent writes cost one
//! fsync. On PostgreSQL, whose connections write in parallel, only plain creates come here.
//!
//! Plain creates, the bulk of the traffic, need no reads and cannot conflict (their ids are new),
//! so they arrive already prepared ([`VersionWrite`]) and the batch writes all of them with one
//! multi-row INSERT per table: a single writer spends its time on statements, not on resources.
//! Their AuditEvents (and those of reads) arrive sealed the same way, and the batch links them
//! into an audit chain in its transaction ([`crate::audit::chain::link`]).

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{Acquire, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::write_clock::OpenWrite;
use crate::audit::chain::SealedEvent;
use crate::error::{ApiError, ApiResult};
use crate::store::write::VersionWrite;
use crate::store::{Backend, Conn, begin_write};

/// Jobs committed together at most.
const MAX_BATCH: usize = 256;

/// Called after the shared commit with its error, if any.
type Completer = Box<dyn FnOnce(Option<ApiError>) + Send>;

/// How a job ended inside its savepoint.
#[derive(Debug)]
enum Ended {
    Succeeded,
    /// The job's own failure (invalid input, a conflict): roll back its savepoint only.
    Failed,
    /// The database failed under it (I/O, disk full, …): SQLite may already have rolled back the
    /// whole transaction, so nothing of the batch can be trusted to commit.
    Broke(ApiError),
}

/// A type-erased write job.
trait Job: Send {
    /// Run inside a savepoint; say how it ended, and how to answer once committed.
    fn run<'c>(self: Box<Self>, conn: &'c mut Conn) -> BoxFuture<'c, (Ended, Completer)>;
    /// Answer without running (the batch could not start).
    fn fail(self: Box<Self>, error: ApiError);
}

struct TypedJob<F, T> {
    work: F,
    reply: oneshot::Sender<ApiResult<T>>,
    /// Closed once the job is answered: after its commit or rollback.
    open: OpenWrite,
}

impl<F, T> Job for TypedJob<F, T>
where
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, ApiResult<T>> + Send + 'static,
    T: Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut Conn) -> BoxFuture<'c, (Ended, Completer)> {
        let TypedJob { work, reply, open } = *self;
        Box::pin(async move {
            let result = match AssertUnwindSafe(work(conn)).catch_unwind().await {
                Ok(result) => result,
                Err(_) => {
                    tracing::error!("a write job panicked; it was rolled back");
                    Err(ApiError::Internal)
                }
            };
            let ended = match &result {
                Ok(_) => Ended::Succeeded,
                Err(error @ (ApiError::Internal | ApiError::Unavailable(_))) => {
                    Ended::Broke(error.clone())
                }
                Err(_) => Ended::Failed,
            };
            let completer: Completer = Box::new(move |commit_error| {
                let answer = match (result, commit_error) {
                    (Ok(value), None) => Ok(value),
                    (Ok(_), Some(error)) | (Err(error), _) => Err(error),
                };
                let _ = reply.send(answer);
                drop(open);
            });
            (ended, completer)
        })
    }

    fn fail(self: Box<Self>, error: ApiError) {
        let _ = self.reply.send(Err(error));
    }
}

/// What the committer is asked to do.
enum Request {
    /// Run arbitrary writes (with reads) in a savepoint.
    Job(Box<dyn Job>),
    /// Insert prepared first versions of new resources, and link their AuditEvents.
    Create(Creates, oneshot::Sender<ApiResult<()>>),
}

/// New resources and the sealed AuditEvents that record them (or record reads).
struct Creates {
    writes: Vec<VersionWrite>,
    audits: Vec<SealedEvent>,
    /// The write they were stamped in, closed after the commit.
    open: OpenWrite,
}

/// Handle to the committer task.
#[derive(Clone)]
pub struct GroupCommitter {
    jobs: mpsc::Sender<Request>,
}

/// What the committer task needs besides its jobs.
#[derive(Clone)]
struct Writer {
    pool: AnyPool,
    backend: Backend,
    /// Audit chains to link AuditEvents into (`audit.chains`).
    chains: u32,
}

impl GroupCommitter {
    /// Start the committer on `writer`, the store's write pool.
    ///
    /// On SQLite the committer gets a thread of its own. It is the single writer, so the whole
    /// server's write rate is how fast it turns around; each statement is a round trip to sqlx's
    /// SQLite thread, and on the shared runtime every one of those wake-ups would wait behind the
    /// request tasks that are busy validating and indexing the next batch (measured: a batch of
    /// one create spent 3.5–8 ms in its statements on the shared runtime, 0.6–1 ms on its own).
    /// On PostgreSQL its connections' sockets belong to the main runtime, so it stays there.
    pub fn start(pool: AnyPool, backend: Backend, chains: u32) -> std::io::Result<Self> {
        let writer = Writer {
            pool,
            backend,
            chains,
        };
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        match backend {
            Backend::Sqlite => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                std::thread::Builder::new()
                    .name("fhirvault-writer".into())
                    .spawn(move || runtime.block_on(run(writer, receiver)))?;
            }
            Backend::Postgres => {
                tokio::spawn(run(writer, receiver));
            }
        }
        Ok(GroupCommitter { jobs })
    }

    /// Run `work` in a transaction shared with other concurrent writes; resolve once committed.
    /// `open` stays open until then.
    pub async fn write<T, F>(&self, open: OpenWrite, work: F) -> ApiResult<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, ApiResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob { work, reply, open });
        if self.jobs.send(Request::Job(job)).await.is_err() {
            return Err(shutting_down());
        }
        answer.await.unwrap_or_else(|_| Err(ApiError::Internal))
    }

    /// Insert first versions of new resources, stamped under `open`, and link AuditEvents;
    /// resolve once committed.
    pub async fn create(
        &self,
        open: OpenWrite,
        writes: Vec<VersionWrite>,
        audits: Vec<SealedEvent>,
    ) -> ApiResult<()> {
        let (reply, answer) = oneshot::channel();
        if self
            .jobs
            .send(Request::Create(
                Creates {
                    writes,
                    audits,
                    open,
                },
                reply,
            ))
            .await
            .is_err()
        {
            return Err(shutting_down());
        }
        answer.await.unwrap_or(Err(ApiError::Internal))
    }
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable("the server is shutting down".into())
}

async fn run(writer: Writer, mut receiver: mpsc::Receiver<Request>) {
    while let Some(first) = receiver.recv().await {
        let mut requests = vec![first];
        while requests.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        let mut jobs = Vec::new();
        let mut creates = Vec::new();
        for request in requests {
            match request {
                Request::Job(job) => jobs.push(job),
                Request::Create(write, reply) => creates.push((write, reply)),
            }
        }
        if !creates.is_empty() {
            commit_creates(&writer, creates).await;
        }
        if !jobs.is_empty() {
            commit_batch(&writer, jobs).await;
        }
    }
}

/// Insert prepared creates together: one transaction, one statement per table, one chain link
/// step for all their AuditEvents.
async fn commit_creates(writer: &Writer, creates: Vec<(Creates, oneshot::Sender<ApiResult<()>>)>) {
    let mut writes = Vec::new();
    let mut audits = Vec::new();
    let mut replies = Vec::with_capacity(creates.len());
    let mut opens = Vec::with_capacity(creates.len());
    for (created, reply) in creates {
        writes.extend(created.writes);
        audits.extend(created.audits);
        opens.push(created.open);
        replies.push(reply);
    }
    let result = async {
        let mut tx = begin_write(&writer.pool, writer.backend).await?;
        crate::audit::chain::write_with_events(&mut tx, writer.chains, &writes, &audits).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    for reply in replies {
        let _ = reply.send(result.clone());
    }
    drop(opens);
}

async fn commit_batch(writer: &Writer, mut batch: Vec<Box<dyn Job>>) {
    if batch.len() == 1 {
        if let Some(job) = batch.pop() {
            commit_alone(writer, job).await;
        }
        return;
    }
    let mut tx = match begin_write(&writer.pool, writer.backend).await {
        Ok(tx) => tx,
        Err(error) => {
            let error = ApiError::from(error);
            for job in batch {
                job.fail(error.clone());
            }
            return;
        }
    };
    let mut completers: Vec<Completer> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        let mut savepoint = match Acquire::begin(&mut tx).await {
            Ok(savepoint) => savepoint,
            Err(error) => {
                job.fail(ApiError::from(error));
                continue;
            }
        };
        let (ended, completer) = job.run(&mut savepoint).await;
        let released = match ended {
            Ended::Succeeded => savepoint.commit().await,
            Ended::Failed => savepoint.rollback().await,
            Ended::Broke(error) => {
                // Give up the whole batch: roll back and tell every job, run or not, that it failed.
                drop(savepoint);
                let _ = tx.rollback().await;
                completer(Some(error.clone()));
                for earlier in completers {
                    earlier(Some(error.clone()));
                }
                for waiting in jobs {
                    waiting.fail(error.clone());
                }
                return;
            }
        };
        match released {
            Ok(()) => completers.push(completer),
            Err(error) => completer(Some(ApiError::from(error))),
        }
    }
    let commit_error = tx.commit().await.err().map(ApiError::from);
    for completer in completers {
        completer(commit_error.clone());
    }
}

/// A job with nobody to share the commit with needs no savepoint (whose page copies cost time).
async fn commit_alone(writer: &Writer, job: Box<dyn Job>) {
    let mut tx = match begin_write(&writer.pool, writer.backend).await {
        Ok(tx) => tx,
        Err(error) => return job.fail(ApiError::from(error)),
    };
    let (ended, completer) = job.run(&mut tx).await;
    match ended {
        Ended::Succeeded => completer(tx.commit().await.err().map(ApiError::from)),
        Ended::Failed | Ended::Broke(_) => {
            if let Err(error) = tx.rollback().await {
                tracing::warn!(%error, "rollback failed");
            }
            completer(None);
        }
    }
}
