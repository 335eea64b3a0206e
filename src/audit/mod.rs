//! The audit trail: every access to PHI leaves an AuditEvent, and the AuditEvents are
//! hash-chained so that changing, removing or inserting one is detectable.
//!
//! # Layout
//!
//! - [`record`]: [`AuditRecord`], the facts of one audited event, and the AuditEvent JSON it
//!   becomes (IHE BALP shape).
//! - [`chain`]: [`append`] writes AuditEvents through the one write path and links them into a
//!   hash chain inside the caller's transaction; [`crate::service::Service::audit`] does the same
//!   in a transaction of its own (for reads), queueing to the spool when configured.
//! - [`journal`]: the read journal (`audit.read_records = "journal"`): reads' AuditEvents made
//!   durable by a shared fsync of a sealed file, and drained into the chains in batches.
//! - [`spool`]: the sealed on-disk queue for AuditEvents the database refused, and its drain.
//! - [`verify`]: walking the chains and naming the first break of each.
//! - [`retention`]: exporting and pruning AuditEvents past their retention without breaking a
//!   chain.
//!
//! Writes call [`append`] inside their `Service::write` closure, so the AuditEvent commits with
//! the change it records; reads call `service.audit(records)` before answering. The SQL lives in
//! [`crate::store::audit`]. docs/audit.md describes the whole design for operators.

pub mod chain;
pub mod journal;
pub mod record;
pub mod retention;
pub mod spool;
pub mod verify;

pub use chain::append;
pub use record::{AuditRecord, Entity, Event, Outcome, RestInteraction};
