//! The read statements of restricted callers, planned once per caller and type.
//!
//! A restricted caller reads a resource in one statement: its head and current version, and the
//! caller's rule (role reach, scopes, Consents) compiled by the search planner
//! ([`Service::read_visible`]). For one caller and one type that statement is the same every time
//! but for the id and the clock of the Consent check, and compiling the rule costs more than
//! running the statement (on SQLite a clinician's read spent most of its extra time over an
//! admin's read in the planner). So the plan is kept, keyed by what the rule depends on
//! ([`Visibility::reuse_key`]: the caller's fingerprint and the permission) and the type, and is
//! run again with the id and the clock set anew.
//!
//! A plan depends on the service's registry, value sets and base URL too; those do not change
//! while a service runs, and the cache belongs to its service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ApiResult;
use crate::search::plan::Plan;
use crate::search::query::Visibility;
use crate::store::Bind;

/// Plans remembered at most; when full, the cache starts over (as the compiled rules do).
const MAX_PLANS: usize = 10_000;

#[derive(Debug, Default)]
pub struct ReadPlans {
    plans: Mutex<HashMap<String, Arc<ReadPlan>>>,
}

/// The condition over the head row `h` of a read of one id, and its binds.
#[derive(Debug)]
struct ReadPlan {
    condition: Arc<str>,
    binds: Vec<Bind>,
    /// Where in `binds` the id goes.
    id_bind: usize,
    /// Where in `binds` the clock goes ([`Plan::clock_binds`]).
    clock_binds: Vec<usize>,
}

impl ReadPlans {
    /// The condition (over `resource_heads h`) and binds that find live `id` of `resource_type`
    /// if `visibility` lets the caller see it. `plan` plans that read (`_id` = `id`, under
    /// `visibility`); it runs only when no plan for this caller and type is kept.
    pub fn condition(
        &self,
        visibility: Option<&dyn Visibility>,
        resource_type: &str,
        id: &str,
        plan: impl FnOnce() -> ApiResult<Plan>,
    ) -> ApiResult<(Arc<str>, Vec<Bind>)> {
        let key = visibility
            .and_then(Visibility::reuse_key)
            .map(|key| format!("{key}|{resource_type}"));
        if let Some(kept) = key.as_ref().and_then(|key| self.get(key)) {
            return Ok(kept.statement(id));
        }
        let plan = plan()?;
        let mut binds = plan.binds.clone();
        binds.truncate(plan.where_binds);
        let condition: Arc<str> = plan.where_sql.as_str().into();
        // The id must be the one bind that holds it: a rule value equal to the id would make the
        // bind to replace ambiguous, and such a plan is simply not kept.
        let id_bind = {
            let mut at = binds
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, Bind::Text(text) if text == id))
                .map(|(i, _)| i);
            match (at.next(), at.next()) {
                (Some(i), None) => Some(i),
                _ => None,
            }
        };
        let clock_in_where = plan.clock_binds.iter().all(|&i| i < binds.len());
        if let (Some(key), Some(id_bind), true) = (key, id_bind, plan.reusable && clock_in_where) {
            let kept = ReadPlan {
                condition: condition.clone(),
                binds: binds.clone(),
                id_bind,
                clock_binds: plan.clock_binds,
            };
            let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(key, Arc::new(kept));
        }
        Ok((condition, binds))
    }

    fn get(&self, key: &str) -> Option<Arc<ReadPlan>> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.get(key).cloned()
    }
}

impl ReadPlan {
    fn statement(&self, id: &str) -> (Arc<str>, Vec<Bind>) {
        let mut binds = self.binds.clone();
        binds[self.id_bind] = Bind::Text(id.to_string());
        let now = crate::fhir::instant::now_micros();
        for &i in &self.clock_binds {
            binds[i] = Bind::Int(now);
        }
        (self.condition.clone(), binds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::Restriction;

    #[derive(Debug)]
    struct Keyed(&'static str);

    impl Visibility for Keyed {
        fn restriction(&self, _: &str) -> ApiResult<Restriction> {
            Ok(Restriction::Everything)
        }
        fn reuse_key(&self) -> Option<&str> {
            Some(self.0)
        }
    }

    /// A plan as the planner makes it for `_id=id` under a rule with one value and a clock.
    fn plan_of(id: &str, rule_value: &str, reusable: bool) -> Plan {
        Plan {
            where_sql: "h.resource_type = $1 AND h.id IN ($2) AND rule($3, $4)".into(),
            binds: vec![
                Bind::Text("Observation".into()),
                Bind::Text(id.into()),
                Bind::Text(rule_value.into()),
                Bind::Int(1),
                Bind::Text("sort key".into()),
            ],
            where_binds: 4,
            sort_keys: Vec::new(),
            order: Vec::new(),
            clock_binds: vec![3],
            reusable,
        }
    }

    fn planned(
        plans: &ReadPlans,
        visibility: &dyn Visibility,
        id: &str,
        rule_value: &str,
        reusable: bool,
    ) -> (bool, Vec<Bind>) {
        let mut ran = false;
        let (_, binds) = plans
            .condition(Some(visibility), "Observation", id, || {
                ran = true;
                Ok(plan_of(id, rule_value, reusable))
            })
            .expect("planned");
        (ran, binds)
    }

    #[test]
    fn a_read_is_planned_once_per_caller_and_type() {
        let plans = ReadPlans::default();
        let (a, b) = (Keyed("a"), Keyed("b"));
        let (ran, binds) = planned(&plans, &a, "o1", "org-a", true);
        assert!(ran);
        assert_eq!(binds.len(), 4, "the sort key binds are not the condition's");
        let (ran, binds) = planned(&plans, &a, "o2", "org-a", true);
        assert!(!ran, "kept");
        assert_eq!(binds[1], Bind::Text("o2".into()), "the id set anew");
        assert_eq!(binds[2], Bind::Text("org-a".into()));
        assert!(
            matches!(binds[3], Bind::Int(now) if now > 1),
            "the clock set anew"
        );
        assert!(planned(&plans, &b, "o2", "org-b", true).0, "another caller");
        let mut ran = false;
        plans
            .condition(Some(&a), "Patient", "p1", || {
                ran = true;
                Ok(plan_of("p1", "org-a", true))
            })
            .expect("planned");
        assert!(ran, "another type");
    }

    #[test]
    fn doubtful_plans_are_not_kept() {
        let plans = ReadPlans::default();
        let a = Keyed("a");
        // The id equals a value of the rule: which bind is the id?
        assert!(planned(&plans, &a, "org-a", "org-a", true).0);
        assert!(planned(&plans, &a, "o1", "org-a", false).0, "not reusable");
        assert!(planned(&plans, &a, "o1", "org-a", true).0);
        assert!(!planned(&plans, &a, "o2", "org-a", true).0);
        // No key: nothing is kept.
        let mut runs = 0;
        for _ in 0..2 {
            plans
                .condition(None, "Observation", "o1", || {
                    runs += 1;
                    Ok(plan_of("o1", "x", true))
                })
                .expect("planned");
        }
        assert_eq!(runs, 2);
    }
}
