//! Display texts the server already knows, so that `:text` need not store them again.
//!
//! `:text` on a token matches when every word of the query is a word of one of the parameter's
//! display texts in the resource (see [`crate::search::index_rows::text_words`]). Those words are
//! stored as blind rows, one per word, because a display can be anything a client wrote. But most
//! codings that reach this server come from its own code tables: every Holter Observation mapped
//! from HL7 v2 carries the same LOINC, MDC and Holter codings with the same displays, and the words
//! of those displays are then six of its index rows.
//!
//! This catalogue holds the codings of those tables with their displays. When a resource has a
//! catalogued coding under a (plain) token parameter, the words of that coding's known display are
//! already findable through the coding's own token row, so no blind row is stored for them: not for
//! the display, and not for the same words in any other text of that parameter (a concept's `text`
//! that repeats its display). `:text` then matches a word either by its blind row or by a token row
//! of a catalogued code whose display has that word.
//!
//! A consequence, documented in README ("Search"): a catalogued code's known display counts as text
//! of the resource even where the resource wrote another display for it. The catalogue is compiled
//! in, so it is the same when rows are written and when they are searched; a release that changes a
//! known display needs `fhirvault reindex` for resources that carry it.

use std::collections::{BTreeSet, HashMap};

use super::extract::normalize_string;
use super::index_rows::text_words;

/// (system, code) → the words of its known displays, and each word → the codes that have it.
#[derive(Debug, Default, Clone)]
pub struct KnownDisplays {
    words: HashMap<(String, String), BTreeSet<String>>,
    codes: HashMap<String, BTreeSet<(String, String)>>,
}

impl KnownDisplays {
    /// The catalogue of `(system, code, display)` codings. A code listed with several displays
    /// knows the words of all of them.
    pub fn from_codings<S: AsRef<str>>(
        codings: impl IntoIterator<Item = (S, S, S)>,
    ) -> KnownDisplays {
        let mut known = KnownDisplays::default();
        for (system, code, display) in codings {
            let (system, code, display) = (system.as_ref(), code.as_ref(), display.as_ref());
            if system.is_empty() || code.is_empty() {
                continue;
            }
            let key = (system.to_string(), code.to_string());
            for word in text_words(&normalize_string(display)) {
                known
                    .words
                    .entry(key.clone())
                    .or_default()
                    .insert(word.to_string());
                known
                    .codes
                    .entry(word.to_string())
                    .or_default()
                    .insert(key.clone());
            }
        }
        known
    }

    /// The words of the known displays of `system|code` (empty when it is not catalogued).
    pub fn words_of(&self, system: &str, code: &str) -> impl Iterator<Item = &str> {
        self.words
            .get(&(system.to_string(), code.to_string()))
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The catalogued codes whose known display has `word` (folded, as [`text_words`] gives it),
    /// grouped by system.
    pub fn codes_with_word(&self, word: &str) -> Vec<(&str, Vec<&str>)> {
        let mut by_system: Vec<(&str, Vec<&str>)> = Vec::new();
        for (system, code) in self.codes.get(word).into_iter().flatten() {
            match by_system.iter_mut().find(|(s, _)| *s == system.as_str()) {
                Some((_, codes)) => codes.push(code),
                None => by_system.push((system, vec![code])),
            }
        }
        by_system
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOINC: &str = "http://loinc.org";

    #[test]
    fn words_are_folded_as_text_search_folds_them() {
        let known = KnownDisplays::from_codings([
            (LOINC, "8867-4", "Heart rate"),
            (
                "urn:iso:std:iso:11073:10101",
                "147842",
                "MDC_ECG_HEART_RATE",
            ),
        ]);
        assert_eq!(
            known.words_of(LOINC, "8867-4").collect::<Vec<_>>(),
            ["heart", "rate"]
        );
        assert_eq!(
            known
                .words_of("urn:iso:std:iso:11073:10101", "147842")
                .count(),
            4
        );
        assert_eq!(known.words_of(LOINC, "0000-0").count(), 0);
        let heart = known.codes_with_word("heart");
        assert_eq!(heart.len(), 2);
        assert!(heart.contains(&(LOINC, vec!["8867-4"])));
        assert!(known.codes_with_word("Heart").is_empty());
    }

    #[test]
    fn a_code_with_two_displays_knows_both_and_codings_without_code_are_skipped() {
        let known = KnownDisplays::from_codings([
            (LOINC, "8867-4", "Heart rate"),
            (LOINC, "8867-4", "Pulse"),
            (LOINC, "", "Orphan display"),
        ]);
        assert_eq!(
            known.words_of(LOINC, "8867-4").collect::<Vec<_>>(),
            ["heart", "pulse", "rate"]
        );
        assert!(known.codes_with_word("orphan").is_empty());
    }
}
