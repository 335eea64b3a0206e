//! The cases, a module per area, and the context they run in.
//!
//! A case is a function `Fn(&Ctx) -> Outcome` with a stable id (`crud-001`): it creates its own
//! data (tagged with [`Ctx::unique`]), never assumes an empty server, and returns `Err` with one
//! line saying what it expected and what it got. To add one, write the function in its area's
//! module and append it to that module's `cases()` list with the next free id.

mod bundles;
mod capability;
mod crud;
mod errors;
mod export;
mod history;
mod hl7v2;
mod search;
mod security;
mod versioning;

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::check::{self, Outcome};
use crate::client::{Fhir, Response, query};

/// One conformance case.
pub struct Case {
    /// Stable id, `<area prefix>-NNN`; `--only` matches its start.
    pub id: String,
    /// The area (module) it belongs to; the JUnit test suite name.
    pub area: &'static str,
    /// A short description of the behaviour checked.
    pub name: String,
    run: Box<dyn Fn(&Ctx) -> Outcome>,
}

impl Case {
    pub fn new(id: impl Into<String>, name: impl Into<String>, run: impl Fn(&Ctx) -> Outcome + 'static) -> Self {
        Self { id: id.into(), area: "", name: name.into(), run: Box::new(run) }
    }

    pub fn run(&self, ctx: &Ctx) -> Outcome {
        (self.run)(ctx)
    }
}

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    let areas: [(&'static str, Vec<Case>); 10] = [
        ("capability", capability::cases()),
        ("crud", crud::cases()),
        ("versioning", versioning::cases()),
        ("history", history::cases()),
        ("bundles", bundles::cases()),
        ("errors", errors::cases()),
        ("search", search::cases()),
        ("hl7v2", hl7v2::cases()),
        ("security", security::cases()),
        ("export", export::cases()),
    ];
    areas.into_iter().flat_map(|(area, cases)| cases.into_iter().map(move |case| Case { area, ..case })).collect()
}

/// What a case gets: the server and a source of unique tokens for its data.
pub struct Ctx {
    fhir: Fhir,
    run_id: String,
    counter: AtomicU64,
    /// Tokens of other callers by name (`--as NAME=TOKEN`), for the access-control cases.
    tokens: Vec<(String, String)>,
}

impl Deref for Ctx {
    type Target = Fhir;
    fn deref(&self) -> &Fhir {
        &self.fhir
    }
}

/// A resource a case created.
pub struct Created {
    pub id: String,
    /// The body the server returned for the create.
    pub resource: Value,
    pub response: Response,
}

impl Created {
    /// `Type/id`, for references and paths.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.resource["resourceType"].as_str().unwrap_or("?"), self.id)
    }
}

impl Ctx {
    pub fn new(fhir: Fhir, tokens: Vec<(String, String)>) -> Self {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Self { fhir, run_id, counter: AtomicU64::new(0), tokens }
    }

    /// The token given as `--as NAME=TOKEN`.
    pub fn token_for(&self, name: &str) -> Option<&str> {
        self.tokens.iter().find(|(n, _)| n == name).map(|(_, token)| token.as_str())
    }

    /// A random token shared by everything this run creates.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A token no other case or run uses: lowercase letters and digits only, so it fits in ids,
    /// identifiers and names alike. Fixed width, so no token is a prefix of another and a
    /// starts-with name search for one cannot match the next.
    pub fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}x{n:05}", self.run_id)
    }

    /// POSTs `resource` to its type asking for the representation back; expects 201.
    pub fn create(&self, resource: &Value) -> Result<Created, String> {
        let resource_type = resource["resourceType"].as_str().unwrap_or("Unknown");
        let response = self.post(resource_type).header("Prefer", "return=representation").json(resource).send()?;
        check::status(&response, &[201])?;
        let body = check::resource(&response, resource_type)?.clone();
        let id = match body["id"].as_str() {
            Some(id) => id.to_string(),
            None => return Err(format!("{}: the created {resource_type} has no id", response.label)),
        };
        Ok(Created { id, resource: body, response })
    }

    /// Creates a resource a case needs but does not test; returns its `Type/id`.
    pub fn setup(&self, resource: Value) -> Result<String, String> {
        self.create(&resource).map(|created| created.reference()).map_err(|error| format!("setup: {error}"))
    }

    /// `GET type?params`; expects 200 and a searchset Bundle.
    pub fn search(&self, resource_type: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let response = self.get(&format!("{resource_type}?{}", query(params))).send()?;
        searchset(&response)
    }
}

/// A 200 searchset Bundle, taken out of its response.
pub fn searchset(response: &Response) -> Result<Value, String> {
    check::status(response, &[200])?;
    let bundle = check::resource(response, "Bundle")?;
    check::str_eq(bundle, "/type", "searchset", &response.label)?;
    Ok(bundle.clone())
}
