//! Access control at the service layer: every interaction asks here before it reads or writes,
//! with the caller it acts for. Reads and searches get the caller's [`Visibility`] inside their
//! query ([`crate::auth::access`]); single-resource checks run the same query for one id, so a
//! resource is "visible" for exactly the same reasons it would be found by a search.
//!
//! Writes are checked twice inside their transaction: the resource as it was must be within the
//! caller's reach (or the write is a 404/403), and the resource as it is after the write must
//! still be (or the transaction rolls back with a 403), so that no one can write a resource
//! out of their own reach — e.g. a patient pointing a Consent at someone else.

use std::sync::Arc;

use serde_json::Value;

use super::Service;
use super::search::matching_ids;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::auth::access::{patient_links, require, visibility};
use crate::auth::pseudonymise::{self, Profile};
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};
use crate::search::extract::{IndexValue, param_values};
use crate::search::query::{MAX_OR_VALUES, SYSTEM, SearchRequest, Visibility, escape};
use crate::store::versions::{self, Head};
use crate::store::{Bind, Conn};

impl Service {
    /// Refuse what the caller's role and scopes can never allow for `resource_type`.
    pub fn require(
        &self,
        caller: &Caller,
        resource_type: &str,
        permission: Permission,
    ) -> ApiResult<()> {
        require(caller, &self.registry, resource_type, permission)
    }

    /// Put the caller's visibility into a search (and refuse searches a pseudonymous view may
    /// not make).
    pub fn restrict_search(
        &self,
        caller: &Arc<Caller>,
        request: &mut SearchRequest,
    ) -> ApiResult<()> {
        if !request.is_system() {
            self.require(caller, &request.resource_type, Permission::Search)?;
        }
        if self.view(caller).is_some() {
            pseudonymise::check_search(request, &self.registry, &self.config.pseudonym_system)?;
        }
        request.visibility = visibility(caller, &self.registry, Permission::Search);
        request.owner = (!caller.is_unrestricted()).then(|| caller.fingerprint());
        request.view = self.view(caller);
        Ok(())
    }

    /// The pseudonymous view this caller gets, if any.
    pub fn view(&self, caller: &Caller) -> Option<Profile> {
        match caller.role {
            Role::Crm => Some(Profile::Crm),
            Role::Insurer if self.config.insurer_pseudonymised => Some(Profile::Insurer),
            _ => None,
        }
    }

    /// Decrypt a stored version and shape it for the caller's view.
    pub fn open_for(
        &self,
        caller: &Caller,
        stored: versions::StoredVersion,
    ) -> ApiResult<super::VersionedResource> {
        let mut opened = self.open_version(stored)?;
        if let Some(resource) = opened.resource.as_mut() {
            self.present(self.view(caller), resource);
        }
        Ok(opened)
    }

    /// Shape a resource for the caller's view (pseudonymise it where the role asks for that).
    pub fn present(&self, view: Option<Profile>, resource: &mut Value) {
        if let Some(profile) = view {
            pseudonymise::pseudonymise(resource, profile, &self.config.pseudonym_system);
        }
    }

    /// Those of `ids` (of `resource_type`) the caller may see for `permission`.
    pub async fn visible_ids(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        permission: Permission,
        resource_type: &str,
        ids: &[String],
    ) -> ApiResult<Vec<String>> {
        match visibility(caller, &self.registry, permission) {
            None => Ok(ids.to_vec()),
            Some(visibility) => {
                self.filter_visible(conn, &visibility, resource_type, ids)
                    .await
            }
        }
    }

    /// Those of `ids` (of `resource_type`) that `visibility` lets through, by one query per
    /// [`MAX_OR_VALUES`] ids.
    pub async fn filter_visible(
        &self,
        conn: &mut Conn,
        visibility: &Arc<dyn Visibility>,
        resource_type: &str,
        ids: &[String],
    ) -> ApiResult<Vec<String>> {
        let mut visible = Vec::new();
        for chunk in ids.chunks(MAX_OR_VALUES) {
            let list: Vec<String> = chunk.iter().map(|id| escape(id)).collect();
            let mut request =
                self.parse_search(resource_type, &[("_id".into(), list.join(","))], true)?;
            request.visibility = Some(visibility.clone());
            let plan = self.plan_search(&request)?;
            visible.extend(matching_ids(conn, &plan, chunk.len()).await?);
        }
        Ok(visible)
    }

    /// The current version of a resource the caller may read, in one query with its access rule;
    /// `None` when it does not exist, is deleted, or is out of reach (alike, on purpose). The
    /// query is planned once per caller and type ([`super::read_plans`]).
    pub async fn read_visible(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<Option<versions::StoredVersion>> {
        self.require(caller, resource_type, Permission::Read)?;
        let visibility = visibility(caller, &self.registry, Permission::Read);
        let (condition, binds) =
            self.read_plans
                .condition(visibility.as_deref(), resource_type, id, || {
                    let mut request =
                        self.parse_search(resource_type, &[("_id".into(), escape(id))], true)?;
                    request.visibility = visibility.clone();
                    self.plan_search(&request)
                })?;
        Ok(versions::read_current_where(conn, &condition, binds).await?)
    }

    /// A single-resource read: allowed interaction, and the resource within reach. What the
    /// caller cannot see does not exist for it (404), so that a refusal never confirms that a
    /// resource exists.
    pub async fn guard_read(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<()> {
        self.require(caller, resource_type, Permission::Read)?;
        if self
            .visible_ids(
                conn,
                caller,
                Permission::Read,
                resource_type,
                &[id.to_string()],
            )
            .await?
            .is_empty()
        {
            return Err(super::read::not_found(resource_type, id));
        }
        Ok(())
    }

    /// Before writing (`permission`) resource `id` whose current head is `head`: the interaction
    /// is allowed, and an existing resource is within the caller's reach — 404 if the caller
    /// cannot even read it, 403 if it can read but not change it.
    pub async fn guard_before_write(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        permission: Permission,
        resource_type: &str,
        id: &str,
        head: Option<Head>,
    ) -> ApiResult<()> {
        let live = head.is_some_and(|h| !h.deleted);
        if caller.is_unrestricted() {
            // Writing where nothing lives is a create, whatever the HTTP method.
            let permission = if live || permission == Permission::Delete {
                permission
            } else {
                Permission::Create
            };
            return self.require(caller, resource_type, permission);
        }
        self.require(caller, resource_type, permission)?;
        if !live {
            // A restricted caller creates with POST (server-assigned ids) only: updating,
            // re-creating or deleting an id that is absent, deleted or out of reach all answer
            // alike, so none of them tells it whether the id was ever used.
            return Err(super::read::not_found(resource_type, id));
        }
        let one = [id.to_string()];
        if !self
            .visible_ids(conn, caller, permission, resource_type, &one)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let readable = self
            .require(caller, resource_type, Permission::Read)
            .is_ok()
            && !self
                .visible_ids(conn, caller, Permission::Read, resource_type, &one)
                .await?
                .is_empty();
        Err(if readable {
            ApiError::Forbidden(format!(
                "this token may read {resource_type}/{id} but not change it"
            ))
        } else {
            super::read::not_found(resource_type, id)
        })
    }

    /// After writing: the resource as written is still within the caller's reach, or the whole
    /// write is refused (the caller's transaction rolls back).
    pub async fn guard_after_write(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        created: bool,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<()> {
        if caller.is_unrestricted() {
            return Ok(());
        }
        let permission = if created {
            Permission::Create
        } else {
            Permission::Update
        };
        if self
            .visible_ids(conn, caller, permission, resource_type, &[id.to_string()])
            .await?
            .is_empty()
        {
            return Err(ApiError::Forbidden(format!(
                "the {resource_type} as written would be outside what this token may write (check its subject, patient and organisation references)"
            )));
        }
        Ok(())
    }

    /// A pseudonymous caller may not patch: JSON Patch `copy`, `move` and `test` operate on the
    /// stored resource, elements its view hides included.
    pub fn guard_patch(&self, caller: &Caller) -> ApiResult<()> {
        match self.view(caller) {
            Some(_) => Err(ApiError::Forbidden("this token sees pseudonymised data and may not use PATCH; send the whole resource with PUT".into())),
            None => Ok(()),
        }
    }

    /// A write's answer in the caller's view.
    pub fn present_outcome(
        &self,
        caller: &Caller,
        mut outcome: super::WriteOutcome,
    ) -> super::WriteOutcome {
        if let Some(resource) = outcome.stored.resource.as_mut() {
            self.present(self.view(caller), resource);
        }
        outcome
    }

    /// Security labels (`meta.security`) are set by admins only: for anyone else the labels of
    /// the current version are kept, and sending different ones is refused.
    pub async fn guard_security_labels(
        &self,
        conn: &mut Conn,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        head: Option<Head>,
        body: &mut Value,
    ) -> ApiResult<()> {
        if caller.role == Role::Admin {
            return Ok(());
        }
        let current = match head {
            Some(h) if !h.deleted => versions::read_current(conn, resource_type, id)
                .await?
                .map(|stored| self.open_version(stored))
                .transpose()?
                .and_then(|v| v.resource)
                .and_then(|r| r.pointer("/meta/security").cloned()),
            _ => None,
        };
        let sent = body.pointer("/meta/security").cloned();
        let empty = |labels: &Option<Value>| {
            labels
                .as_ref()
                .is_none_or(|l| l.as_array().is_some_and(Vec::is_empty))
        };
        if !empty(&sent) && sent != current {
            return Err(ApiError::Forbidden(
                "meta.security labels can only be set or changed by an admin".into(),
            ));
        }
        if let (Some(labels), Some(object)) = (current, body.as_object_mut())
            && let Some(meta) = object
                .entry("meta")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
        {
            meta.insert("security".into(), labels);
        }
        Ok(())
    }

    /// Older versions in the caller's view. Access rules are evaluated on the current version;
    /// a version from before the resource was moved to another patient (a corrected subject)
    /// belongs to that other patient, so restricted callers get only the versions that name
    /// the same patients as the current one. Delete markers carry nothing and stay.
    pub async fn without_moved_versions(
        &self,
        conn: &mut Conn,
        caller: &Caller,
        versions: Vec<super::VersionedResource>,
    ) -> ApiResult<Vec<super::VersionedResource>> {
        if caller.is_unrestricted() {
            return Ok(versions);
        }
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &versions {
            by_type
                .entry(v.resource_type.clone())
                .or_default()
                .push(v.id.clone());
        }
        let mut current: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for (resource_type, mut ids) in by_type {
            ids.dedup();
            for stored in versions::read_current_many(conn, &resource_type, &ids).await? {
                let opened = self.open_version(stored)?;
                let patients = opened
                    .resource
                    .as_ref()
                    .map(|r| self.patients_named(&resource_type, r))
                    .unwrap_or_default();
                current.insert((resource_type.clone(), opened.id), patients);
            }
        }
        Ok(versions
            .into_iter()
            .filter(|v| match &v.resource {
                None => true,
                Some(resource) => {
                    current.get(&(v.resource_type.clone(), v.id.clone()))
                        == Some(&self.patients_named(&v.resource_type, resource))
                }
            })
            .collect())
    }

    /// The Patients a resource of `resource_type` belongs to (its Patient-compartment links).
    pub(crate) fn patients_named(&self, resource_type: &str, resource: &Value) -> BTreeSet<String> {
        let mut patients = BTreeSet::new();
        for code in patient_links(&self.registry, resource_type) {
            let Some(param) = self.registry.get(resource_type, &code) else {
                continue;
            };
            let Some(expression) = param.expression_for(resource_type) else {
                continue;
            };
            for value in param_values(param, expression, resource).unwrap_or_default() {
                if let IndexValue::Reference {
                    target_type: Some(target),
                    target_id: Some(id),
                    ..
                } = value
                    && target == "Patient"
                {
                    patients.insert(id);
                }
            }
        }
        patients
    }

    /// The condition (over `resource_heads h`) that limits a type- or system-level history to
    /// what the caller may see; `None` for an unrestricted caller.
    pub fn history_visibility(
        &self,
        caller: &Arc<Caller>,
        resource_type: Option<&str>,
    ) -> ApiResult<Option<(String, Vec<Bind>)>> {
        if let Some(t) = resource_type {
            self.require(caller, t, Permission::Search)?;
        }
        let Some(visibility) = visibility(caller, &self.registry, Permission::Search) else {
            // Unrestricted (an admin): everything but the audit trail, which is the auditors'.
            return Ok(resource_type.is_none().then(|| {
                (
                    format!("h.resource_type <> '{}'", crate::auth::role::AUDIT_EVENT),
                    Vec::new(),
                )
            }));
        };
        let mut request = self.parse_search(resource_type.unwrap_or(SYSTEM), &[], true)?;
        request.visibility = Some(visibility);
        let plan = self.plan_search(&request)?;
        let mut binds = plan.binds;
        binds.truncate(plan.where_binds);
        Ok(Some((plan.where_sql, binds)))
    }
}
