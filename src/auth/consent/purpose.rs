//! Purpose of use: the v3 PurposeOfUse codes (the `PurposeOfUse` branch of the v3 ActReason code
//! system), loaded from the spec's own `v3-codesystems.json`, with each code's broader purposes,
//! so that a Consent about `HPAYMT` (payment) also covers a request for `COVAUTH` (coverage
//! authorisation), which is a kind of payment.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::rules::PURPOSE_SYSTEM;

/// Emergency treatment: break-the-glass access.
pub const EMERGENCY: &str = "ETREAT";

#[derive(Debug, Default)]
pub struct PurposesOfUse {
    /// Each PurposeOfUse code with its ancestors below the `PurposeOfUse` root, nearest first.
    ancestors: HashMap<String, Vec<String>>,
}

impl PurposesOfUse {
    /// Read the hierarchy from `<dir>/v3-codesystems.json`.
    pub fn load(dir: &Path) -> anyhow::Result<PurposesOfUse> {
        let path = dir.join("v3-codesystems.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let bundle: Value = serde_json::from_str(&text)?;
        let reason = bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .find(|r| r.get("url").and_then(Value::as_str) == Some(PURPOSE_SYSTEM))
            .ok_or_else(|| {
                anyhow::anyhow!("{} has no {PURPOSE_SYSTEM} code system", path.display())
            })?;
        let mut purposes = PurposesOfUse::default();
        let root = find(reason.get("concept"), "PurposeOfUse")
            .ok_or_else(|| anyhow::anyhow!("{PURPOSE_SYSTEM} has no PurposeOfUse concept"))?;
        purposes.add_children(root, &[]);
        if purposes.ancestors.is_empty() {
            anyhow::bail!("{PURPOSE_SYSTEM}: the PurposeOfUse concept has no codes");
        }
        Ok(purposes)
    }

    fn add_children(&mut self, concept: &Value, path: &[String]) {
        for child in concept
            .get("concept")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(code) = child.get("code").and_then(Value::as_str) else {
                continue;
            };
            let mut ancestors = path.to_vec();
            ancestors.reverse();
            self.ancestors.insert(code.to_string(), ancestors);
            let mut below = path.to_vec();
            below.push(code.to_string());
            self.add_children(child, &below);
        }
    }

    /// The code of a purpose as a client writes it (`CODE` or `system|CODE`), if it is a
    /// PurposeOfUse code.
    pub fn parse<'a>(&self, text: &'a str) -> Option<&'a str> {
        let code = match text.split_once('|') {
            Some((system, code)) if system == PURPOSE_SYSTEM || system.is_empty() => code,
            Some(_) => return None,
            None => text,
        };
        self.ancestors.contains_key(code).then_some(code)
    }

    /// `code` and the broader purposes that contain it.
    pub fn with_ancestors(&self, code: &str) -> Vec<String> {
        let mut all = vec![code.to_string()];
        all.extend(self.ancestors.get(code).into_iter().flatten().cloned());
        all
    }

    /// Is `code` emergency treatment (ETREAT or one of its kinds)?
    pub fn is_emergency(&self, code: &str) -> bool {
        self.with_ancestors(code).iter().any(|c| c == EMERGENCY)
    }
}

fn find<'v>(concepts: Option<&'v Value>, code: &str) -> Option<&'v Value> {
    for concept in concepts.and_then(Value::as_array).into_iter().flatten() {
        if concept.get("code").and_then(Value::as_str) == Some(code) {
            return Some(concept);
        }
        if let Some(found) = find(concept.get("concept"), code) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> PurposesOfUse {
        PurposesOfUse::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources"))
            .expect("v3 code systems")
    }

    #[test]
    fn hierarchy_comes_from_the_spec() {
        let purposes = loaded();
        assert_eq!(purposes.with_ancestors("COVAUTH"), ["COVAUTH", "HPAYMT"]);
        assert_eq!(purposes.with_ancestors("BTG"), ["BTG", "ETREAT", "TREAT"]);
        assert!(purposes.is_emergency("ETREAT") && purposes.is_emergency("BTG"));
        assert!(!purposes.is_emergency("TREAT"));
    }

    #[test]
    fn parses_codes_with_or_without_system() {
        let purposes = loaded();
        assert_eq!(purposes.parse("TREAT"), Some("TREAT"));
        assert_eq!(
            purposes.parse(&format!("{PURPOSE_SYSTEM}|HPAYMT")),
            Some("HPAYMT")
        );
        assert_eq!(purposes.parse("http://example.org|TREAT"), None);
        assert_eq!(purposes.parse("PurposeOfUse"), None);
        assert_eq!(purposes.parse("treat"), None);
    }
}
