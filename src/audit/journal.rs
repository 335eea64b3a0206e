//! The read journal: with `audit.read_records = "journal"`, the AuditEvents of reads are made
//! durable by an append to a sealed journal file instead of a database commit, and written into
//! the chain in large batches a moment later.
//!
//! Why: a read's AuditEvent is a resource like any other (sealed, indexed, chained). Written with
//! the read, every read waits for a database commit, and with few clients in flight each commit
//! carries only a handful of AuditEvents (see benches/README.md). Appending the sealed record to
//! a file and fsyncing it is what makes it survive a crash; the journal does that for every read
//! waiting at the same moment with one `write` and one `fdatasync`, and the indexing and chaining
//! run off the read's path, a few hundred AuditEvents per transaction.
//!
//! Nothing is weaker than with `database`: a read is answered only once its record is durable,
//! and a read whose record cannot be journaled is written to the database instead (failing as
//! `audit.on_write_failure` says). The record is only later *searchable*: callers who may see
//! AuditEvents flush the journal first ([`Service::flush_read_journal`], from the API's audit
//! layer), so an auditor never misses an acknowledged read.
//!
//! Layout: `<data_dir>/audit-journal/<time-ordered UUID>.open` while the journal writes it,
//! renamed to `.journal` when closed (every [`CLOSE_AFTER`] while reads arrive, at a flush, or
//! at [`MAX_SEGMENT_BYTES`]). A segment is a sequence of frames, each `len (u32 BE) | sealed`,
//! where `sealed` is the JSON of one append's AuditEvents (ids chosen, bodies built) sealed with
//! the key ring and bound to `<segment>/<offset>` (`Aad::Blob`, purpose `audit-journal`): no
//! plaintext reaches the disk, and a frame edited, moved or removed from the middle does not
//! open. A frame cut short at the end of a segment is a write that never completed, so never
//! acknowledged, and is ignored. The drain writes closed segments into the chain, oldest
//! first, and removes each once its AuditEvents committed; ids already stored (a crash between
//! the commit and the removal) are not written twice. A segment with a frame that does not open
//! is renamed `.broken`, reported, and kept for investigation; its frames before that are
//! written. Segments a stopped server left (`.open` included) are drained as soon as the next
//! one starts.
//!
//! Segments are chained: the first frame of each ([`Header`]) names the segment written before
//! it and how many bytes of whole frames that one held when it was closed. The drain records in
//! the database the last segment it wrote and the bytes it read from it
//! (`audit_journal_state`), so a segment that does not continue from there shows that segments
//! were deleted, or the last one cut short, before they were drained: the drain logs it and
//! writes an AuditEvent saying so (outcome serious failure, [`Event::JournalLoss`]) into the
//! chain. The newest segment, which no later segment names, is covered by the database: the
//! next segment is prepared while the current one takes reads (its empty file `.next` created,
//! then its name recorded by the [`Registrar`] in `audit_journal_opened`), so every segment that
//! may hold acknowledged reads is named there, and a start that finds such a segment neither on
//! disk nor drained reports it the same way ([`report_missing_newest`]).
//!
//! A backlog above [`MAX_BACKLOG_BYTES`] (the database cannot keep up, or refuses writes) sends
//! reads back to the database path, which makes them wait for commits again instead of letting
//! the journal grow without bound.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use serde::{Deserialize, Serialize};

use super::chain::{PendingEvent, append, seal_events};
use super::spool::files_named;
use super::{AuditRecord, Event, Outcome};
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::service::Service;
use crate::service::keys::SharedKeys;
use crate::store::audit as rows;

/// Folder under the data directory.
pub const JOURNAL_DIR: &str = "audit-journal";
const PURPOSE: &str = "audit-journal";
const OPEN: &str = "open";
/// A prepared segment (empty, recorded in the database) that the journal opens next.
const NEXT: &str = "next";
const CLOSED: &str = "journal";
const BROKEN: &str = "broken";
/// A segment that received reads is closed (and so drained) this long after its first frame.
pub const CLOSE_AFTER: Duration = Duration::from_millis(100);
/// A segment is closed once it holds this many bytes.
const MAX_SEGMENT_BYTES: u64 = 8 << 20;
/// Journaled bytes not yet in the database above which reads go to the database again.
const MAX_BACKLOG_BYTES: u64 = 256 << 20;
/// How long the drain waits after the database refused a batch.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// AuditEvents per drain transaction.
const DRAIN_BATCH: usize = 500;
/// Appends written with one `write` and one `fdatasync` at most.
const MAX_APPENDS: usize = 1024;

/// Drains in this process run one at a time.
static DRAINING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the journal's thread is asked to do.
enum Command {
    Append(Vec<PendingEvent>, oneshot::Sender<std::io::Result<()>>),
    /// Close the open segment (if it holds anything), so that a drain takes it.
    Close(oneshot::Sender<()>),
}

/// A request to the [`Registrar`]: create the empty file of `next` (if any), then record
/// (`opened`, `next`) in the database.
struct Registration {
    opened: String,
    next: Option<String>,
    reply: oneshot::Sender<std::io::Result<()>>,
}

/// Records in the database which segments may hold acknowledged reads: the newest the journal
/// opened, and the one it prepared to open next. A task of the service does the writes for the
/// journal's thread. The next segment is prepared (its empty file created and recorded) while
/// the current one takes reads, so that opening it needs no database commit on the reads' path.
#[derive(Clone)]
pub struct Registrar {
    requests: mpsc::Sender<Registration>,
}

impl Registrar {
    /// Start the task that records segments for the journal of `service`.
    pub fn spawn(service: &Service) -> Registrar {
        let (requests, mut received) = mpsc::channel::<Registration>(4);
        let folder = service.config.data_dir.join(JOURNAL_DIR);
        let service = service.clone();
        tokio::spawn(async move {
            while let Some(Registration {
                opened,
                next,
                reply,
            }) = received.recv().await
            {
                let _ = reply.send(record(&service, &folder, opened, next).await);
            }
        });
        Registrar { requests }
    }

    fn send(
        &self,
        opened: &str,
        next: Option<&str>,
    ) -> std::io::Result<oneshot::Receiver<std::io::Result<()>>> {
        let (reply, done) = oneshot::channel();
        self.requests
            .blocking_send(Registration {
                opened: opened.to_string(),
                next: next.map(str::to_string),
                reply,
            })
            .map_err(|_| stopped())?;
        Ok(done)
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the audit journal's registrar has stopped")
}

/// Create `next`'s empty file (durably: its name is fsynced with the folder) and record
/// (`opened`, `next`) in the database.
async fn record(
    service: &Service,
    dir: &Path,
    opened: String,
    next: Option<String>,
) -> std::io::Result<()> {
    if let Some(next) = next.clone() {
        let path = dir.join(format!("{next}.{NEXT}"));
        let folder = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            File::open(&folder)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
    }
    service
        .write(move |conn| {
            Box::pin(async move {
                rows::set_journal_opened(conn, &opened, next.as_deref().unwrap_or_default())
                    .await?;
                Ok(())
            })
        })
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))
}

/// The segment prepared to be opened next.
enum Prepared {
    /// Its file and record are being made.
    Pending(String, oneshot::Receiver<std::io::Result<()>>),
    /// Its empty file exists and the database names it.
    Ready(String),
}

/// Handle to the journal of a running server.
#[derive(Clone)]
pub struct ReadJournal {
    commands: mpsc::Sender<Command>,
    state: Arc<State>,
}

/// What the journal's thread and its handles share.
struct State {
    dir: PathBuf,
    /// Bytes journaled and not yet drained.
    backlog: AtomicU64,
    /// The open segment holds frames.
    unclosed: AtomicBool,
    /// Woken when a segment is closed.
    closed: Notify,
}

impl ReadJournal {
    /// Start the journal under `data_dir`, on a thread of its own (its work is blocking file
    /// I/O). Segments left by an earlier run are closed, for the next drain. `drained` is the
    /// last segment the drain wrote ([`last_drained`]); the first new segment continues from it,
    /// or from a newer segment still in the folder. `registrar` records each new segment in the
    /// database before a read in it is acknowledged.
    pub fn start(
        data_dir: &Path,
        keys: SharedKeys,
        drained: Option<(String, u64)>,
        registrar: Registrar,
    ) -> std::io::Result<ReadJournal> {
        let dir = data_dir.join(JOURNAL_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        // What a stopped journal left open or prepared is closed, for the drain (a prepared
        // segment is empty, or holds frames when its rename to `.open` did not survive a crash).
        let left_open = files_named(&dir, OPEN)?.into_iter();
        for left in left_open.chain(files_named(&dir, NEXT)?) {
            match fs::rename(&left, left.with_extension(CLOSED)) {
                // Closed meanwhile by the journal of a service that just stopped.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                renamed => renamed?,
            }
        }
        let backlog = files_named(&dir, CLOSED)?
            .iter()
            .map(|path| fs::metadata(path).map(|m| m.len()).unwrap_or(0))
            .sum();
        let last = newest_segment(&dir, drained)?;
        let state = Arc::new(State {
            dir,
            backlog: AtomicU64::new(backlog),
            unclosed: AtomicBool::new(false),
            closed: Notify::new(),
        });
        let (commands, receiver) = mpsc::channel(4 * MAX_APPENDS);
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("fhirvault-journal".into())
            .spawn(move || Writer::new(thread_state, keys, registrar, last).run(receiver))?;
        Ok(ReadJournal { commands, state })
    }

    /// Whether the drain is so far behind that reads should wait for the database instead.
    pub fn overloaded(&self) -> bool {
        self.state.backlog.load(Ordering::Relaxed) > MAX_BACKLOG_BYTES
    }

    /// Append `events`; resolves once they are durable.
    pub(super) async fn append(&self, events: Vec<PendingEvent>) -> std::io::Result<()> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(Command::Append(events, reply))
            .await
            .map_err(|_| std::io::Error::other("the audit journal has stopped"))?;
        done.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the audit journal has stopped")))
    }

    /// Close the open segment if it holds frames (so that a drain takes it); resolves once
    /// closed.
    pub async fn close_segment(&self) {
        if !self.state.unclosed.load(Ordering::Acquire) {
            return;
        }
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The journal's thread: owns the open segment.
struct Writer {
    state: Arc<State>,
    keys: SharedKeys,
    registrar: Registrar,
    open: Option<Segment>,
    prepared: Option<Prepared>,
    /// What the next segment's first frame says: the segment before it.
    last: Header,
}

/// The first frame of every segment: the segment written before it, and how many bytes of whole
/// frames that one held when it was closed (empty and 0 when the journal knows of none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    previous: String,
    previous_bytes: u64,
}

struct Segment {
    name: String,
    file: File,
    bytes: u64,
    opened: Instant,
}

impl Writer {
    fn new(state: Arc<State>, keys: SharedKeys, registrar: Registrar, last: Header) -> Writer {
        Writer {
            state,
            keys,
            registrar,
            open: None,
            prepared: None,
            last,
        }
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let newest = self.last.previous.clone();
        self.prepare(&newest);
        while let Some(first) = receiver.blocking_recv() {
            let mut commands = vec![first];
            while commands.len() < MAX_APPENDS {
                match receiver.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::new();
            let mut closes = Vec::new();
            for command in commands {
                match command {
                    Command::Append(events, reply) => appends.push((events, reply)),
                    Command::Close(reply) => closes.push(reply),
                }
            }
            // Appends first: a flush sees every append that was waiting beside it.
            if !appends.is_empty() {
                let written = self.write(appends.iter().map(|(events, _)| events));
                for (_, reply) in appends {
                    let _ = reply.send(written.as_ref().map(|_| ()).map_err(clone_error));
                }
            }
            // Closed when due only once the next segment is ready, so that opening it makes no
            // read wait for the database (which may be slow or locked: the journal's reads go
            // on meanwhile, into this segment, which the database already names).
            let due = self.open.as_ref().is_some_and(|segment| {
                segment.bytes >= MAX_SEGMENT_BYTES || segment.opened.elapsed() >= CLOSE_AFTER
            }) && self.next_ready();
            if !closes.is_empty() || due {
                self.close();
            }
            for reply in closes {
                let _ = reply.send(());
            }
        }
        self.close();
    }

    /// Write one frame per append and make them durable. On failure the segment is closed: a
    /// partial frame at its end is ignored by the drain, and the next append starts a new one.
    fn write<'e>(
        &mut self,
        appends: impl Iterator<Item = &'e Vec<PendingEvent>>,
    ) -> std::io::Result<()> {
        let result = self.try_write(appends);
        if result.is_err() {
            self.close();
        }
        result
    }

    fn try_write<'e>(
        &mut self,
        appends: impl Iterator<Item = &'e Vec<PendingEvent>>,
    ) -> std::io::Result<()> {
        if self.open.is_none() {
            self.open = Some(self.new_segment()?);
        }
        let Some(segment) = self.open.as_mut() else {
            return Err(std::io::Error::other("no open journal segment"));
        };
        let keys = self.keys.current();
        let mut frames = Vec::new();
        for events in appends {
            let plain = serde_json::to_vec(events).map_err(std::io::Error::other)?;
            push_frame(&mut frames, &keys, &segment.name, segment.bytes, &plain)?;
        }
        segment.write_durably(&frames, &self.state)
    }

    /// A new segment, durable with its first frame (the segment before it), and one the database
    /// names as possibly holding reads before any read in it is acknowledged: the segment
    /// prepared while the last one took reads, or (when preparing failed) one created and
    /// recorded now. Then the segment after it is prepared.
    fn new_segment(&mut self) -> std::io::Result<Segment> {
        let prepared = match self.prepared.take() {
            Some(Prepared::Ready(name)) => Some(name),
            Some(Prepared::Pending(name, ready)) => match ready.blocking_recv() {
                Ok(Ok(())) => Some(name),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not prepare the next audit journal segment; opening one now");
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let (name, segment) = match prepared {
            Some(name) => {
                let next = self.state.dir.join(format!("{name}.{NEXT}"));
                let path = next.with_extension(OPEN);
                fs::rename(&next, &path)?;
                let file = OpenOptions::new().write(true).open(&path)?;
                let segment = self.start_segment(&name, file, &path)?;
                (name, segment)
            }
            None => {
                let name = FhirId::generate().into_string();
                let path = self.state.dir.join(format!("{name}.{OPEN}"));
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                let segment = self.start_segment(&name, file, &path)?;
                // The name must survive a crash with the frames that will be acknowledged in it.
                File::open(&self.state.dir)?.sync_all()?;
                // A failed registration may still have committed: the file stays (header only)
                // and is drained, so it is never missing.
                self.registrar
                    .send(&name, None)?
                    .blocking_recv()
                    .map_err(|_| stopped())??;
                (name, segment)
            }
        };
        self.prepare(&name);
        Ok(segment)
    }

    /// Start preparing the segment to open after `opened` (the newest opened, or the newest in
    /// the folder at start), without waiting for it.
    fn prepare(&mut self, opened: &str) {
        let next = FhirId::generate().into_string();
        match self.registrar.send(opened, Some(&next)) {
            Ok(ready) => self.prepared = Some(Prepared::Pending(next, ready)),
            Err(error) => tracing::warn!(%error, "cannot prepare the next audit journal segment"),
        }
    }

    /// Whether the next segment is prepared; a preparation that failed is started again.
    fn next_ready(&mut self) -> bool {
        let Some(Prepared::Pending(name, ready)) = &mut self.prepared else {
            return matches!(self.prepared, Some(Prepared::Ready(_)));
        };
        match ready.try_recv() {
            Ok(Ok(())) => {
                self.prepared = Some(Prepared::Ready(std::mem::take(name)));
                true
            }
            Err(oneshot::error::TryRecvError::Empty) => false,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not prepare the next audit journal segment; trying again");
                let opened = self
                    .open
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                self.prepare(&opened);
                false
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                self.prepared = None;
                true
            }
        }
    }

    /// Write the first frame of segment `name` (the segment before it) and make it durable. On
    /// failure the file stays, closed at the next start: it may be named in the database.
    fn start_segment(&self, name: &str, file: File, path: &Path) -> std::io::Result<Segment> {
        let mut segment = Segment {
            name: name.to_string(),
            file,
            bytes: 0,
            opened: Instant::now(),
        };
        let mut header = Vec::new();
        let plain = serde_json::to_vec(&self.last).map_err(std::io::Error::other)?;
        push_frame(&mut header, &self.keys.current(), name, 0, &plain)?;
        segment.write_durably(&header, &self.state).map_err(|error| {
            tracing::error!(%error, segment = %path.display(), "cannot start an audit journal segment");
            error
        })?;
        Ok(segment)
    }
    /// Rename the open segment to `.journal`. The rename need not be durable: after a crash,
    /// [`ReadJournal::start`] closes whatever is still `.open`.
    fn close(&mut self) {
        let Some(segment) = self.open.take() else {
            return;
        };
        let open = self.state.dir.join(format!("{}.{OPEN}", segment.name));
        drop(segment.file);
        self.last = Header {
            previous: segment.name.clone(),
            previous_bytes: segment.bytes,
        };
        if let Err(error) = fs::rename(&open, open.with_extension(CLOSED)) {
            tracing::error!(%error, segment = %segment.name, "cannot close an audit journal segment; it is drained at the next start");
        }
        self.state.unclosed.store(false, Ordering::Release);
        self.state.closed.notify_one();
    }
}

impl Segment {
    /// Append `frames` and make them durable.
    fn write_durably(&mut self, frames: &[u8], state: &State) -> std::io::Result<()> {
        self.file.write_all(frames)?;
        self.file.sync_data()?;
        self.bytes += frames.len() as u64;
        state
            .backlog
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        state.unclosed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Append to `frames` the frame of `plain`, sealed for its place in segment `name`: its offset
/// is `written` (the segment's bytes so far) plus the frames before it in `frames`.
fn push_frame(
    frames: &mut Vec<u8>,
    keys: &crate::crypto::KeyRing,
    name: &str,
    written: u64,
    plain: &[u8],
) -> std::io::Result<()> {
    let offset = written + frames.len() as u64;
    let sealed = keys
        .seal(&frame_aad_key(name, offset).as_aad(), plain)
        .map_err(std::io::Error::other)?;
    let length = u32::try_from(sealed.len()).map_err(std::io::Error::other)?;
    frames.extend_from_slice(&length.to_be_bytes());
    frames.extend_from_slice(&sealed);
    Ok(())
}

fn clone_error(error: &std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), error.to_string())
}

/// The AAD key of the frame at `offset` of segment `name`.
struct FrameKey(String);

fn frame_aad_key(name: &str, offset: u64) -> FrameKey {
    FrameKey(format!("{name}/{offset}"))
}

impl FrameKey {
    fn as_aad(&self) -> Aad<'_> {
        Aad::Blob {
            purpose: PURPOSE,
            key: &self.0,
        }
    }
}

/// What a closed segment holds.
struct Frames {
    /// Its first frame; `None` for a segment written before segments were chained.
    header: Option<Header>,
    events: Vec<PendingEvent>,
    /// Where a frame did not open (the segment is kept as `.broken`).
    broken_at: Option<u64>,
    /// Bytes of whole frames, opened or not ([`whole_frames`]).
    whole_bytes: u64,
}

/// The whole frames of `segment`: each one's offset, sealed bytes and end. A frame cut short at
/// the end is a write that never completed, so never acknowledged: it is not one of them.
fn frames_of(segment: &[u8]) -> impl Iterator<Item = (usize, &[u8], usize)> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let length = segment.get(offset..offset + 4)?;
        let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
        let end = offset + 4 + length;
        let sealed = segment.get(offset + 4..end)?;
        let frame = (offset, sealed, end);
        offset = end;
        Some(frame)
    })
}

/// The bytes of `segment` up to the end of its last whole frame.
fn whole_frames(segment: &[u8]) -> u64 {
    frames_of(segment)
        .last()
        .map_or(0, |(_, _, end)| end as u64)
}

fn segment_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Read the frames of the segment at `path`.
fn read_segment(keys: &SharedKeys, path: &Path) -> std::io::Result<Frames> {
    let name = segment_name(path);
    let bytes = fs::read(path)?;
    let mut frames = Frames {
        header: None,
        events: Vec::new(),
        broken_at: None,
        whole_bytes: whole_frames(&bytes),
    };
    for (offset, sealed, _) in frames_of(&bytes) {
        let plain = keys
            .open(&frame_aad_key(&name, offset as u64).as_aad(), sealed)
            .ok();
        let events = plain
            .as_deref()
            .and_then(|p| serde_json::from_slice::<Vec<PendingEvent>>(p).ok());
        let header = plain
            .as_deref()
            .filter(|_| offset == 0)
            .and_then(|p| serde_json::from_slice::<Header>(p).ok());
        match (events, header) {
            (Some(events), _) => frames.events.extend(events),
            (None, Some(header)) => frames.header = Some(header),
            (None, None) => {
                frames.broken_at = Some(offset as u64);
                break;
            }
        }
    }
    Ok(frames)
}

/// What the first new segment continues from: the newest segment in `dir` (of any state), or
/// the last one drained if that is newer (names are time-ordered).
fn newest_segment(dir: &Path, drained: Option<(String, u64)>) -> std::io::Result<Header> {
    let mut newest = drained.map(|(previous, previous_bytes)| Header {
        previous,
        previous_bytes,
    });
    for state in [OPEN, CLOSED, BROKEN] {
        for path in files_named(dir, state)? {
            let name = segment_name(&path);
            if newest.as_ref().is_none_or(|n| name > n.previous) {
                newest = Some(Header {
                    previous: name,
                    previous_bytes: whole_frames(&fs::read(&path)?),
                });
            }
        }
    }
    Ok(newest.unwrap_or_default())
}

/// Why `header`, the first frame of segment `name`, does not continue from `drained`, the last
/// segment the drain wrote (name and bytes read): the reads journaled in between are lost.
fn discontinuity(drained: &(String, u64), header: &Header, name: &str) -> Option<String> {
    let (last, read) = drained;
    if header.previous != *last {
        return Some(format!(
            "audit journal segment {name} does not follow {last}, the last segment drained: the segments written between them were deleted before they were drained, and the reads they recorded are not in the audit trail"
        ));
    }
    (header.previous_bytes > *read).then(|| {
        format!(
            "audit journal segment {last} was cut short before it was drained: {} bytes were written, {read} were read; the reads recorded in the rest are not in the audit trail",
            header.previous_bytes
        )
    })
}

/// The last segment the drain wrote, and the bytes it read from it (for [`ReadJournal::start`]).
pub async fn last_drained(service: &Service) -> ApiResult<Option<(String, u64)>> {
    let mut conn = service.reader().await?;
    Ok(rows::journal_state(&mut conn)
        .await?
        .map(|(name, bytes)| (name, u64::try_from(bytes).unwrap_or(0))))
}

impl Service {
    /// The read journal, when this server runs one.
    pub fn read_journal(&self) -> Option<&ReadJournal> {
        self.read_journal.get()
    }

    /// Make every journaled read record searchable: close the open segment and drain. A no-op
    /// without a journal.
    pub async fn flush_read_journal(&self) -> ApiResult<()> {
        let Some(journal) = self.read_journal() else {
            return Ok(());
        };
        journal.close_segment().await;
        drain_journal(self).await.map(|_| ())
    }

    /// Journal the AuditEvents of a read; `Err` when the journal cannot take them (the caller
    /// then writes them to the database).
    pub(super) async fn journal_read(
        &self,
        events: Vec<PendingEvent>,
    ) -> Result<(), Vec<PendingEvent>> {
        let Some(journal) = self.read_journal().filter(|j| !j.overloaded()) else {
            return Err(events);
        };
        match journal.append(events.clone()).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "cannot append to the audit journal; writing to the database");
                Err(events)
            }
        }
    }
}

/// Write every closed segment into the chain and remove it. Returns how many AuditEvents were
/// written; stops at the first batch the database refuses (the rest stay journaled).
pub async fn drain_journal(service: &Service) -> ApiResult<usize> {
    let Some(journal) = service.read_journal() else {
        return Ok(0);
    };
    let _one_at_a_time = DRAINING.lock().await;
    let io = |error: std::io::Error| {
        tracing::error!(%error, "cannot read the audit journal");
        ApiError::Internal
    };
    let mut written = 0;
    let mut drained = last_drained(service).await?;
    for path in files_named(&journal.state.dir, CLOSED).map_err(io)? {
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let keys = service.keys.clone();
        let read_path = path.clone();
        let frames = tokio::task::spawn_blocking(move || read_segment(&keys, &read_path))
            .await
            .map_err(|_| ApiError::Internal)?
            .map_err(io)?;
        for chunk in frames.events.chunks(DRAIN_BATCH) {
            written += write_new(service, chunk.to_vec()).await?;
        }
        // A segment at or before the last one drained is one whose removal a crash interrupted:
        // its ids are recognised above, and it says nothing new about the chain of segments.
        let name = segment_name(&path);
        if drained.as_ref().is_none_or(|(last, _)| name > *last) {
            let loss = match (&drained, &frames.header) {
                (Some(drained), Some(header)) => discontinuity(drained, header, &name),
                // The first segment drained, or one written before segments were chained.
                _ => None,
            };
            // Recorded before the file goes: a segment removed but not recorded would look
            // deleted to the next one.
            record_drained(service, &name, frames.whole_bytes, loss).await?;
            drained = Some((name, frames.whole_bytes));
        }
        let finished = match frames.broken_at {
            None => fs::remove_file(&path),
            Some(offset) => {
                tracing::error!(segment = %path.display(), offset, "an audit journal frame does not open; the segment is kept as .broken and its earlier frames were written");
                fs::rename(&path, path.with_extension(BROKEN))
            }
        };
        if let Err(error) = finished {
            // Written already: the next drain recognises the ids and only removes the file.
            tracing::warn!(%error, segment = %path.display(), "a drained audit journal segment could not be removed");
        }
        journal.state.backlog.fetch_sub(
            size.min(journal.state.backlog.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }
    Ok(written)
}

/// At start, before the journal opens a segment: the segments the database names as possibly
/// holding reads (the newest opened and the one prepared next) must still be in the folder, or
/// drained. One that is neither was deleted with the reads it recorded after the server stopped,
/// and no later segment names it: reported like the losses the drain finds (a log line and an
/// AuditEvent), and forgotten in the same transaction, so that it is reported once.
pub async fn report_missing_newest(
    service: &Service,
    drained: Option<&(String, u64)>,
) -> ApiResult<()> {
    let named = {
        let mut conn = service.reader().await?;
        rows::journal_opened(&mut conn).await?
    };
    let dir = service.config.data_dir.join(JOURNAL_DIR);
    let missing: Vec<String> = named
        .into_iter()
        .filter(|name| {
            let on_disk = [NEXT, OPEN, CLOSED, BROKEN]
                .iter()
                .any(|state| dir.join(format!("{name}.{state}")).exists());
            !on_disk && drained.is_none_or(|(last, _)| name > last)
        })
        .collect();
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let record = loss_record(
        first,
        format!(
            "audit journal segment {}, which the journal had opened (or prepared to open next), is neither in the journal folder nor drained: it was deleted after the server stopped, and any reads it recorded are not in the audit trail",
            missing.join(" and ")
        ),
    );
    let this = service.clone();
    service
        .write(move |conn| {
            Box::pin(async move {
                rows::set_journal_opened(conn, "", "").await?;
                append(&this, conn, &[record]).await?;
                Ok(())
            })
        })
        .await
}

/// The AuditEvent (logged as an error too) saying that reads were lost at segment `name`.
fn loss_record(name: &str, why: String) -> AuditRecord {
    tracing::error!(segment = name, "{why}");
    AuditRecord::record_management(Event::JournalLoss, Outcome::SeriousFailure, why)
}

/// Record segment `name` as drained (`bytes` read), and with it an AuditEvent for `loss`, the
/// reason reads were lost before it, in one transaction.
async fn record_drained(
    service: &Service,
    name: &str,
    bytes: u64,
    loss: Option<String>,
) -> ApiResult<()> {
    let record = loss.map(|why| loss_record(name, why));
    let (this, name) = (service.clone(), name.to_string());
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    service
        .write(move |conn| {
            Box::pin(async move {
                rows::set_journal_state(conn, &name, bytes).await?;
                if let Some(record) = record {
                    append(&this, conn, &[record]).await?;
                }
                Ok(())
            })
        })
        .await
}

/// Seal (off the writer) and write the events that are not stored yet.
async fn write_new(service: &Service, events: Vec<PendingEvent>) -> ApiResult<usize> {
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    let stored: std::collections::HashSet<String> = {
        let mut conn = service.reader().await?;
        rows::current_versions(&mut conn, &ids)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let fresh: Vec<PendingEvent> = events
        .into_iter()
        .filter(|event| !stored.contains(&event.id))
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    let this = service.clone();
    let open = service.clock.open();
    let sealed = tokio::task::spawn_blocking(move || seal_events(&this, fresh))
        .await
        .map_err(|_| ApiError::Internal)??;
    let count = sealed.len();
    service.committer.create(open, Vec::new(), sealed).await?;
    Ok(count)
}

/// Drain closed segments as they close (and the open one every [`CLOSE_AFTER`]), until the
/// task is aborted.
pub fn spawn_drain(service: Service) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(journal) = service.read_journal().cloned() else {
            return;
        };
        let mut failing = false;
        loop {
            if failing {
                // Each attempt reads and seals a whole segment again: not ten times a second.
                tokio::time::sleep(RETRY_AFTER).await;
            }
            tokio::select! {
                () = journal.state.closed.notified() => {}
                () = tokio::time::sleep(CLOSE_AFTER) => journal.close_segment().await,
            }
            match drain_journal(&service).await {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    tracing::warn!(%error, "the audit journal cannot be drained yet; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}
