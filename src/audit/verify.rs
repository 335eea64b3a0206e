//! Checking the chains (`fhirvault audit verify`).
//!
//! Every chain is walked from its anchor in seq order. For each link the AuditEvent's version 1 is
//! loaded, opened with the key ring and hashed again with the previous link's hash; the result
//! must be the stored link hash, seq must follow seq without a gap, the AuditEvent must not have
//! been changed since (no later version), and the head must name the last link. The first break
//! of each chain is reported by chain, seq, AuditEvent id and what is wrong; nothing of an
//! AuditEvent's content is ever printed.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use super::chain::link_hash;
use crate::crypto::{Aad, KeyRing};
use crate::store::Conn;
use crate::store::audit::{self as rows, AUDIT_EVENT, ChainHead, Link};

/// Links read per round trip.
const PAGE: i64 = 512;

/// What is wrong at a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No link with this seq, though later ones exist.
    Gap,
    /// The link's AuditEvent has no version 1 (deleted rows).
    MissingVersion,
    /// Version 1 is there but does not open with the key ring (altered bytes, or moved).
    CannotDecrypt,
    /// The recomputed hash differs from the link's: the AuditEvent, the link or an earlier link
    /// was changed.
    HashMismatch,
    /// The AuditEvent was changed after it was recorded: it has a version after 1.
    Rewritten { version: i64 },
    /// The head does not name the last link: links were added or removed at the end, or the
    /// head was moved.
    HeadMismatch { head_seq: i64, last_seq: i64 },
    /// The chain has links but no head row.
    MissingHead,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap => f.write_str("gap: the link is missing"),
            Problem::MissingVersion => {
                f.write_str("missing row: the AuditEvent's version 1 is not in the database")
            }
            Problem::CannotDecrypt => {
                f.write_str("cannot decrypt: the AuditEvent's stored bytes were altered")
            }
            Problem::HashMismatch => {
                f.write_str("hash mismatch: the AuditEvent or the link was altered")
            }
            Problem::Rewritten { version } => {
                write!(f, "rewritten: the AuditEvent has a later version {version}")
            }
            Problem::HeadMismatch { head_seq, last_seq } => {
                write!(
                    f,
                    "head mismatch: the head names seq {head_seq}, the chain ends at seq {last_seq} (or its hash differs)"
                )
            }
            Problem::MissingHead => {
                f.write_str("missing head: the chain has links but no head row")
            }
        }
    }
}

/// The first break of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: i64,
    /// The AuditEvent of the link, when there is a link.
    pub id: Option<String>,
    pub problem: Problem,
}

/// One chain's result.
#[derive(Debug, Clone)]
pub struct ChainReport {
    pub chain: i64,
    pub anchor_seq: i64,
    /// Links whose hash was checked and found right.
    pub links: u64,
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
    pub broken: Option<Break>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub chains: Vec<ChainReport>,
    /// AuditEvents that no chain links (written around the audit trail).
    pub unchained: i64,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.chains.iter().all(|chain| chain.broken.is_none())
    }

    /// One line per chain, then a summary: chain numbers, seqs, ids and hashes, no content.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for chain in &self.chains {
            let head = format!(
                "head seq {} hash {}",
                chain.head_seq,
                hex::encode(&chain.head_hash)
            );
            lines.push(match &chain.broken {
                None => format!(
                    "chain {}: intact, {} links checked from anchor seq {}, {head}",
                    chain.chain, chain.links, chain.anchor_seq
                ),
                Some(broken) => format!(
                    "chain {}: BROKEN at seq {}{}: {}; {} links checked before it, {head}",
                    chain.chain,
                    broken.seq,
                    broken
                        .id
                        .as_ref()
                        .map(|id| format!(" (AuditEvent {id})"))
                        .unwrap_or_default(),
                    broken.problem,
                    chain.links,
                ),
            });
        }
        let links: u64 = self.chains.iter().map(|c| c.links).sum();
        let broken = self.chains.iter().filter(|c| c.broken.is_some()).count();
        lines.push(format!(
            "{} chains, {links} links checked, {broken} broken",
            self.chains.len()
        ));
        if self.unchained > 0 {
            lines.push(format!(
                "note: {} AuditEvent(s) in no chain (written around the audit trail)",
                self.unchained
            ));
        }
        lines
    }
}

/// Check every chain. `conn` reads; nothing is written.
pub async fn verify(conn: &mut Conn, keys: &KeyRing) -> Result<Report, sqlx::Error> {
    let mut report = Report {
        chains: Vec::new(),
        unchained: rows::count_unchained(conn).await?,
    };
    for head in rows::heads(conn).await? {
        report.chains.push(check_chain(conn, keys, head).await?);
    }
    for chain in rows::linked_chains(conn).await? {
        if report.chains.iter().any(|checked| checked.chain == chain) {
            continue;
        }
        let first = rows::links_after(conn, chain, i64::MIN, 1)
            .await?
            .into_iter()
            .next();
        report.chains.push(ChainReport {
            chain,
            anchor_seq: 0,
            links: 0,
            head_seq: 0,
            head_hash: Vec::new(),
            broken: Some(Break {
                seq: first.as_ref().map_or(0, |link| link.seq),
                id: first.map(|link| link.id),
                problem: Problem::MissingHead,
            }),
        });
    }
    report.chains.sort_by_key(|chain| chain.chain);
    Ok(report)
}

async fn check_chain(
    conn: &mut Conn,
    keys: &KeyRing,
    head: ChainHead,
) -> Result<ChainReport, sqlx::Error> {
    let mut report = ChainReport {
        chain: head.chain,
        anchor_seq: head.anchor_seq,
        links: 0,
        head_seq: head.seq,
        head_hash: head.hash.clone(),
        broken: None,
    };
    let mut walk = Walk::new(&head);
    while let Some(step) = walk.next(conn, keys).await? {
        match step {
            Ok(_) => report.links += 1,
            Err(broken) => {
                report.broken = Some(broken);
                return Ok(report);
            }
        }
    }
    let (last_seq, last_hash) = walk.position();
    if last_seq != head.seq || last_hash != head.hash.as_slice() {
        report.broken = Some(Break {
            // The first seq where the links and the head disagree.
            seq: if last_seq == head.seq {
                last_seq
            } else {
                last_seq.min(head.seq) + 1
            },
            id: None,
            problem: Problem::HeadMismatch {
                head_seq: head.seq,
                last_seq,
            },
        });
    }
    Ok(report)
}

/// A link whose hash checked out, with the plaintext it covers.
#[derive(Debug, Clone)]
pub struct CheckedLink {
    pub seq: i64,
    pub id: String,
    pub hash: Vec<u8>,
    /// The AuditEvent's version 1 as sealed (JSON).
    pub plain: Vec<u8>,
}

/// Walks one chain from its anchor, checking each link (shared by verify and prune).
pub struct Walk {
    chain: i64,
    /// The last link checked (the anchor at first).
    seq: i64,
    hash: Vec<u8>,
    buffered: VecDeque<(Link, Option<Vec<u8>>, Option<i64>)>,
    exhausted: bool,
    stopped: bool,
}

impl Walk {
    pub fn new(head: &ChainHead) -> Walk {
        Walk {
            chain: head.chain,
            seq: head.anchor_seq,
            hash: head.anchor_hash.clone(),
            buffered: VecDeque::new(),
            exhausted: false,
            stopped: false,
        }
    }

    /// The last link checked: (seq, hash); the anchor before the first.
    pub fn position(&self) -> (i64, &[u8]) {
        (self.seq, &self.hash)
    }

    /// The next link, checked; `Err` is the chain's first break (the walk ends there); `None`
    /// once the chain ends.
    pub async fn next(
        &mut self,
        conn: &mut Conn,
        keys: &KeyRing,
    ) -> Result<Option<Result<CheckedLink, Break>>, sqlx::Error> {
        if self.stopped {
            return Ok(None);
        }
        if self.buffered.is_empty() && !self.exhausted {
            self.fill(conn).await?;
        }
        let Some((link, sealed, current)) = self.buffered.pop_front() else {
            return Ok(None);
        };
        let expected = self.seq + 1;
        let broken = |seq, id: Option<&str>, problem| Break {
            seq,
            id: id.map(str::to_string),
            problem,
        };
        let checked = if link.seq != expected {
            Err(broken(expected, None, Problem::Gap))
        } else {
            match sealed {
                None => Err(broken(link.seq, Some(&link.id), Problem::MissingVersion)),
                Some(sealed) => match keys.open(
                    &Aad::Resource {
                        resource_type: AUDIT_EVENT,
                        id: &link.id,
                        version: 1,
                    },
                    &sealed,
                ) {
                    Err(_) => Err(broken(link.seq, Some(&link.id), Problem::CannotDecrypt)),
                    Ok(plain)
                        if link_hash(&self.hash, self.chain, link.seq, &link.id, &plain)
                            .as_slice()
                            != link.hash.as_slice() =>
                    {
                        Err(broken(link.seq, Some(&link.id), Problem::HashMismatch))
                    }
                    Ok(_) if current.is_some_and(|version| version != 1) => Err(broken(
                        link.seq,
                        Some(&link.id),
                        Problem::Rewritten {
                            version: current.unwrap_or_default(),
                        },
                    )),
                    Ok(plain) => Ok(CheckedLink {
                        seq: link.seq,
                        id: link.id,
                        hash: link.hash,
                        plain,
                    }),
                },
            }
        };
        match &checked {
            Ok(link) => {
                self.seq = link.seq;
                self.hash = link.hash.clone();
            }
            Err(_) => self.stopped = true,
        }
        Ok(Some(checked))
    }

    /// Read the next page of links with their AuditEvents' version 1 and current version.
    async fn fill(&mut self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        let after = self
            .buffered
            .back()
            .map_or(self.seq, |(link, _, _)| link.seq);
        let links = rows::links_after(conn, self.chain, after, PAGE).await?;
        self.exhausted = (links.len() as i64) < PAGE;
        let ids: Vec<String> = links.iter().map(|link| link.id.clone()).collect();
        let mut sealed: HashMap<String, Option<Vec<u8>>> = rows::first_versions(conn, &ids)
            .await?
            .into_iter()
            .collect();
        let current: HashMap<String, i64> = rows::current_versions(conn, &ids)
            .await?
            .into_iter()
            .collect();
        for link in links {
            let body = sealed.remove(&link.id).flatten();
            let version = current.get(&link.id).copied();
            self.buffered.push_back((link, body, version));
        }
        Ok(())
    }
}
