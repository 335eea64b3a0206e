//! A Consent resource as rows the query planner can match: each `provision`, with the
//! conditions it inherits from its ancestors, becomes rows of (effect, actor, purpose, class,
//! data, period, depth). At access time the deepest matching row of the newest Consent decides
//! (see [`super`] for the rule); here is only what a Consent says.
//!
//! Conditions this server cannot evaluate in a query (`code`, `securityLabel`, `dataPeriod`,
//! `data` other than single instances, classes and purposes of other systems) are handled
//! fail-safe: a deny that names them applies without them (it denies more), a permit that names
//! them does not apply (it permits less). An actor it cannot recognise in a token (a
//! Practitioner, a CareTeam) is refused when the Consent is written: dropping it would turn
//! "deny Dr X" into "deny everyone", keeping it would match no one.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::search::extract::parse_date_range;

/// The system of `Consent.scope` and the code of the consents enforced here.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const PRIVACY_SCOPE: &str = "patient-privacy";
/// `provision.class` codes are resource types of this system.
pub const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
/// A provision actor that is one of this server's roles: `actor.reference.identifier` with
/// this system and the role's name (`crm`, `insurer`, …).
pub const ROLE_SYSTEM: &str = "urn:fhirvault:role";
/// Purpose-of-use codes (v3 ActReason, PurposeOfUse branch).
pub const PURPOSE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// `Consent.policyRule` codes that give the root provision its effect when it has no `type`.
const POLICY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// `provision.action` codes that cover reading data through this API; a provision naming only
/// other actions (`collect`, `correct`) does not govern access.
const ACTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
const ACCESS_ACTIONS: [&str; 3] = ["access", "use", "disclose"];

/// "Any": an unconstrained actor, purpose or class column.
pub const ANY: &str = "*";
/// Rows one Consent may expand to (actors × purposes × classes × data of every provision).
const MAX_ROWS: usize = 1000;

/// One row of a Consent's rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsentRow {
    pub patient: String,
    /// `Consent.dateTime` (else the version's lastUpdated), µs: the newer Consent wins.
    pub recorded: i64,
    /// 0 for the root provision, +1 per nesting level: the deeper (more specific) row wins.
    pub depth: i64,
    pub permit: bool,
    /// [`ANY`], `Organization/<id>` or `role:<name>`.
    pub actor: String,
    /// [`ANY`] or a PurposeOfUse code.
    pub purpose: String,
    /// [`ANY`] or a resource type.
    pub class: String,
    /// One resource (`provision.data` with meaning `instance`), or `("", "")` for all data.
    pub data: (String, String),
    /// When the row applies, µs, half-open `[starts, ends)`.
    pub starts: i64,
    pub ends: i64,
}

/// What a Consent enforces: its rows, or why it cannot be enforced. A Consent that is not an
/// active privacy consent has no rows (it is stored, but decides nothing).
pub fn rows_of(
    consent: &Value,
    last_updated: i64,
    base_url: &str,
) -> Result<Vec<ConsentRow>, String> {
    if consent.get("status").and_then(Value::as_str) != Some("active") || !is_privacy(consent) {
        return Ok(Vec::new());
    }
    let patient = consent
        .pointer("/patient/reference")
        .and_then(Value::as_str)
        .and_then(|r| local_id(r, "Patient", base_url))
        .ok_or("an active patient-privacy Consent must name its patient as a local reference (Consent.patient = Patient/<id>)")?;
    let recorded = match consent.get("dateTime").and_then(Value::as_str) {
        Some(text) => {
            parse_date_range(text)
                .ok_or("Consent.dateTime is not a valid dateTime")?
                .0
        }
        None => last_updated,
    };
    let root_effect = policy_effect(consent);
    let root = match consent.get("provision") {
        Some(provision) => provision.clone(),
        // A Consent of policy alone (OPTIN / OPTOUT): one unconditional rule.
        None if root_effect.is_some() => Value::Object(Default::default()),
        None => return Ok(Vec::new()),
    };
    let mut flattener = Flattener {
        patient,
        recorded,
        base_url,
        rows: BTreeSet::new(),
    };
    flattener.walk(&root, &Conditions::any(), 0, root_effect)?;
    Ok(flattener.rows.into_iter().collect())
}

fn is_privacy(consent: &Value) -> bool {
    codings(consent.get("scope"))
        .any(|(system, code)| system == Some(SCOPE_SYSTEM) && code == PRIVACY_SCOPE)
}

/// OPTIN permits and OPTOUT denies, where the root provision says neither.
fn policy_effect(consent: &Value) -> Option<bool> {
    codings(consent.get("policyRule")).find_map(|(system, code)| match (system, code) {
        (Some(POLICY_SYSTEM), "OPTIN" | "OPTINR") => Some(true),
        (Some(POLICY_SYSTEM), "OPTOUT" | "OPTOUTE") => Some(false),
        _ => None,
    })
}

/// The (system, code) pairs of a CodeableConcept, a Coding, or an array of either.
fn codings(value: Option<&Value>) -> impl Iterator<Item = (Option<&str>, &str)> {
    let mut found = Vec::new();
    let mut pending: Vec<&Value> = value.into_iter().collect();
    while let Some(v) = pending.pop() {
        match v {
            Value::Array(items) => pending.extend(items),
            Value::Object(o) if o.contains_key("coding") => pending.extend(o.get("coding")),
            Value::Object(o) => {
                if let Some(code) = o.get("code").and_then(Value::as_str) {
                    found.push((o.get("system").and_then(Value::as_str), code));
                }
            }
            _ => {}
        }
    }
    found.into_iter()
}

/// The id of `reference` if it points at a local `resource_type` (relative, or absolute under
/// this server's base).
fn local_id(reference: &str, resource_type: &str, base_url: &str) -> Option<String> {
    local_reference(reference, base_url)
        .filter(|(t, _)| t == resource_type)
        .map(|(_, id)| id)
}

/// (type, id) of a local reference: relative, or absolute under this server's base.
fn local_reference(reference: &str, base_url: &str) -> Option<(String, String)> {
    let relative = reference
        .strip_prefix(base_url.trim_end_matches('/'))
        .map_or(reference, |r| r.trim_start_matches('/'));
    let (resource_type, id) = relative.split_once('/')?;
    (!resource_type.is_empty() && crate::fhir::id::is_valid_id(id))
        .then(|| (resource_type.to_string(), id.to_string()))
}

/// The codes of `codings` whose system `known` accepts, and whether any had another system.
fn known_codes(
    codings: &[Value],
    known: impl Fn(Option<&str>) -> bool,
) -> (BTreeSet<String>, bool) {
    let (mut codes, mut unknown) = (BTreeSet::new(), false);
    for coding in codings {
        match (
            coding.get("system").and_then(Value::as_str),
            coding.get("code").and_then(Value::as_str),
        ) {
            (system, Some(code)) if known(system) => {
                codes.insert(code.to_string());
            }
            _ => unknown = true,
        }
    }
    (codes, unknown)
}

/// A condition from what could be read of it. Values this server cannot tell make the provision
/// `partial`; when they are all there is, the dimension is "any" (which values it is about is
/// unknown), and the fail-safe handling of partial provisions applies.
fn narrowed<T: Ord>(known: BTreeSet<T>, unknown: bool, partial: &mut bool) -> Option<BTreeSet<T>> {
    *partial |= unknown;
    (!(known.is_empty() && unknown)).then_some(known)
}

/// What a provision and its ancestors require; `None` in a dimension is "any".
#[derive(Debug, Clone)]
struct Conditions {
    /// Some condition could not be expressed (see the module documentation): a permit under it
    /// does not apply, a deny applies without it.
    partial: bool,
    actors: Option<BTreeSet<String>>,
    purposes: Option<BTreeSet<String>>,
    classes: Option<BTreeSet<String>>,
    data: Option<BTreeSet<(String, String)>>,
    starts: i64,
    ends: i64,
}

impl Conditions {
    fn any() -> Conditions {
        Conditions {
            partial: false,
            actors: None,
            purposes: None,
            classes: None,
            data: None,
            starts: i64::MIN,
            ends: i64::MAX,
        }
    }

    /// Both `self` and `own`; `None` when nothing can meet both.
    fn and(&self, own: Conditions) -> Option<Conditions> {
        fn both<T: Ord + Clone>(
            a: &Option<BTreeSet<T>>,
            b: Option<BTreeSet<T>>,
        ) -> Option<Option<BTreeSet<T>>> {
            let joined = match (a, b) {
                (None, b) => b,
                (Some(a), None) => Some(a.clone()),
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            };
            match joined {
                Some(set) if set.is_empty() => None,
                joined => Some(joined),
            }
        }
        let joined = Conditions {
            partial: self.partial || own.partial,
            actors: both(&self.actors, own.actors)?,
            purposes: both(&self.purposes, own.purposes)?,
            classes: both(&self.classes, own.classes)?,
            data: both(&self.data, own.data)?,
            starts: self.starts.max(own.starts),
            ends: self.ends.min(own.ends),
        };
        (joined.starts < joined.ends).then_some(joined)
    }
}

struct Flattener<'a> {
    patient: String,
    recorded: i64,
    base_url: &'a str,
    rows: BTreeSet<ConsentRow>,
}

impl Flattener<'_> {
    fn walk(
        &mut self,
        provision: &Value,
        inherited: &Conditions,
        depth: i64,
        inherited_effect: Option<bool>,
    ) -> Result<(), String> {
        let at = format!("Consent.provision{}", ".provision".repeat(depth as usize));
        if !governs_access(provision) {
            return Ok(());
        }
        let effect = match provision.get("type").and_then(Value::as_str) {
            Some("permit") => Some(true),
            Some("deny") => Some(false),
            Some(other) => return Err(format!("{at}.type `{other}` is neither permit nor deny")),
            None => inherited_effect,
        };
        let Some(conditions) = inherited.and(self.conditions(provision, &at)?) else {
            return Ok(());
        };
        match effect {
            Some(true) if conditions.partial => {}
            Some(permit) => self.emit(&conditions, depth, permit)?,
            None => {}
        }
        for child in provision
            .get("provision")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.walk(child, &conditions, depth + 1, effect)?;
        }
        Ok(())
    }

    /// The conditions a provision states itself.
    fn conditions(&self, provision: &Value, at: &str) -> Result<Conditions, String> {
        let mut own = Conditions::any();
        own.partial = ["code", "securityLabel", "dataPeriod"]
            .iter()
            .any(|element| provision.get(*element).is_some());
        if let Some(actors) = provision.get("actor").and_then(Value::as_array) {
            let keys: Result<BTreeSet<String>, String> =
                actors.iter().map(|a| self.actor_key(a, at)).collect();
            own.actors = Some(keys?);
        }
        if let Some(purposes) = provision.get("purpose").and_then(Value::as_array) {
            let (codes, unknown) = known_codes(purposes, |system| {
                matches!(system, None | Some(PURPOSE_SYSTEM))
            });
            own.purposes = narrowed(codes, unknown, &mut own.partial);
        }
        if let Some(classes) = provision.get("class").and_then(Value::as_array) {
            let (types, unknown) = known_codes(classes, |system| system == Some(RESOURCE_TYPES));
            own.classes = narrowed(types, unknown, &mut own.partial);
        }
        if let Some(data) = provision.get("data").and_then(Value::as_array) {
            let (mut instances, mut unknown) = (BTreeSet::new(), false);
            for item in data {
                if item.get("meaning").and_then(Value::as_str) != Some("instance") {
                    unknown = true;
                    continue;
                }
                let reference = item
                    .pointer("/reference/reference")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let instance = local_reference(reference, self.base_url).ok_or_else(|| {
                    format!("{at}.data.reference must be a local reference (Type/id)")
                })?;
                instances.insert(instance);
            }
            own.data = narrowed(instances, unknown, &mut own.partial);
        }
        if let Some(period) = provision.get("period") {
            if let Some(start) = period.get("start").and_then(Value::as_str) {
                own.starts = parse_date_range(start)
                    .ok_or_else(|| format!("{at}.period.start is not a valid dateTime"))?
                    .0;
            }
            if let Some(end) = period.get("end").and_then(Value::as_str) {
                own.ends = parse_date_range(end)
                    .ok_or_else(|| format!("{at}.period.end is not a valid dateTime"))?
                    .1;
            }
        }
        Ok(own)
    }

    /// The key an actor matches callers by: their organisation or their role.
    fn actor_key(&self, actor: &Value, at: &str) -> Result<String, String> {
        let reference = actor.get("reference");
        if let Some(id) = reference
            .and_then(|r| r.get("reference"))
            .and_then(Value::as_str)
            .and_then(|r| local_id(r, "Organization", self.base_url))
        {
            return Ok(format!("Organization/{id}"));
        }
        let identifier = reference.and_then(|r| r.get("identifier"));
        if identifier
            .and_then(|i| i.get("system"))
            .and_then(Value::as_str)
            == Some(ROLE_SYSTEM)
            && let Some(role) = identifier
                .and_then(|i| i.get("value"))
                .and_then(Value::as_str)
            && role.parse::<crate::auth::Role>().is_ok()
        {
            return Ok(format!("role:{role}"));
        }
        Err(format!(
            "{at}.actor.reference: an actor must be a local Organization or a role (identifier system {ROLE_SYSTEM}, value a role name); other actors cannot be matched to a caller"
        ))
    }

    fn emit(&mut self, conditions: &Conditions, depth: i64, permit: bool) -> Result<(), String> {
        let all = |set: &Option<BTreeSet<String>>| {
            set.clone()
                .unwrap_or_else(|| BTreeSet::from([ANY.to_string()]))
        };
        let data = conditions
            .data
            .clone()
            .unwrap_or_else(|| BTreeSet::from([(String::new(), String::new())]));
        for actor in all(&conditions.actors) {
            for purpose in all(&conditions.purposes) {
                for class in all(&conditions.classes) {
                    for instance in &data {
                        self.rows.insert(ConsentRow {
                            patient: self.patient.clone(),
                            recorded: self.recorded,
                            depth,
                            permit,
                            actor: actor.clone(),
                            purpose: purpose.clone(),
                            class: class.clone(),
                            data: instance.clone(),
                            starts: conditions.starts,
                            ends: conditions.ends,
                        });
                        if self.rows.len() > MAX_ROWS {
                            return Err(format!(
                                "this Consent expands to more than {MAX_ROWS} rules (actors × purposes × classes × data); split it"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a provision speaks about reading data (no `action`, or access/use/disclose).
fn governs_access(provision: &Value) -> bool {
    let Some(actions) = provision.get("action") else {
        return true;
    };
    codings(Some(actions)).any(|(system, code)| {
        matches!(system, None | Some(ACTION_SYSTEM)) && ACCESS_ACTIONS.contains(&code)
    })
}

#[cfg(test)]
mod tests;
