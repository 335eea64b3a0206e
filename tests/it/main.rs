//! The integration tests: one binary, so that the crate and its dependencies are linked once and
//! the throwaway PostgreSQL cluster is started once for all of them. Each module drives a real
//! server over real sockets, on both backends (see [`common`]).

#[macro_use]
mod common;

mod access;
mod audit;
mod audit_chain;
mod audit_journal;
mod cli;
mod consent;
mod crl;
mod encryption;
mod export;
mod hl7v2;
mod idp;
mod import;
mod limits;
mod profiles;
mod reindex;
mod rest;
mod search;
mod search_params;
mod tls;
mod transaction;
