//! HL7 v2 ingestion: ORU^R01 result messages from Holter analysers and device hubs, over MLLP and
//! HTTP, mapped to FHIR resources through the same write path as the REST API.
//!
//! # Layout
//!
//! - `er7.rs`: the ER7 (pipe-and-hat) parser: segments, fields, escapes, charsets, batch files.
//! - `dtm.rs`: HL7 DTM timestamps → FHIR dateTime/instant with the sender's precision.
//! - `mllp.rs`: MLLP framing, the listener (limits, pipelining, shutdown) and a small client.
//! - `ack.rs`: ACK messages with MSA and ERR (table 0357); `mode.rs`: original vs enhanced mode.
//! - `codes.rs`, `tables.rs`, `data/`: the Holter code table, MDC→UCUM units, HL7 table maps.
//! - `map/`: ORU^R01 → Patient, Device, Observation, DiagnosticReport drafts (no I/O).
//! - `plan.rs`: the drafts as concrete resources with their ids (patients and devices matched by
//!   identifier first), plus the Provenance.
//! - `ingest.rs`: parse → check → resend? → map → store (with the message's bookkeeping row in
//!   the same transaction) → answer; dead letters for everything that is not stored.
//! - `files.rs`: `fhirvault ingest` (message and batch files) and the dead-letter listing.
//! - `transport.rs`: the glue from MLLP frames and HTTP bodies to [`ingest::Ingestor`].
//! - `fuzzing.rs`: parse → check → map → entries → ACK without a database, with the invariants
//!   the fuzz target (fuzz/) checks; its test replays the corpus in `tests/fixtures/hl7v2/fuzz/`.

pub mod ack;
pub mod codes;
pub mod dtm;
pub mod er7;
pub mod escape;
pub mod files;
pub mod fuzzing;
pub mod ingest;
pub mod map;
pub mod mllp;
pub mod mode;
pub mod plan;
pub mod tables;
#[cfg(test)]
mod test_rng;
pub mod transport;
