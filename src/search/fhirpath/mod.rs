//! The FHIRPath subset that the R4 search parameters are written in.
//!
//! Every search parameter of the specification says which parts of a resource it indexes by a
//! FHIRPath expression (`Patient.name`, `Observation.value as Quantity`,
//! `Account.subject.where(resolve() is Patient)`). We evaluate those expressions at write time over
//! the resource's own JSON, so the index rows follow the specification instead of a hand-written
//! table. A full FHIRPath engine is much more than the R4 bundle needs: its 1,378 parameters use
//! path navigation, `|`, `as`/`is`/`ofType`, `where`, `resolve()`, `exists()`, one `and`, one
//! `!=`, one indexer and `%resource`. That is what this module implements, plus the handful of
//! neighbours (`first()`, `not()`, `extension(url)`, …) that project-specific parameters are likely
//! to use.
//!
//! Anything else in the FHIRPath grammar still *parses*, into a node that fails evaluation with
//! [`FhirPathError::Unsupported`]; [`Expression::check_supported`] finds such nodes without
//! evaluating. That way a parameter using, say, `memberOf()` is reported (and logged by the
//! registry) instead of silently indexing nothing.
//!
//! # Types
//!
//! Extraction dispatches on the FHIR datatype of each value, so each [`Node`] carries its type when
//! the expression reveals it: the suffix of a choice element (`valueQuantity` is a `Quantity`), the
//! type named by `as`/`ofType`, a resource's `resourceType`. Otherwise the type is `None` and the
//! caller infers it from the JSON shape. We deliberately do not load the StructureDefinitions for
//! this: the shape is unambiguous for every datatype a search parameter can point at.
//!
//! Choice elements (`value[x]`) are found by trying `name` + a FHIR datatype name; the list of
//! datatypes a choice can take is the closed list of the R4 spec ("Open Type Element").

//!
//! # Layout
//!
//! - `lex` and `parse`: text to syntax tree, once per expression ([`Expression::parse`]). The
//!   whole FHIRPath operator table is recognised, so precedence is right even for operators we
//!   do not evaluate.
//! - `eval`: the tree over a resource's JSON, producing [`Node`]s.
//! - `node`: [`Node`] and navigation, including choice elements.
//! - `reference`: literal reference parsing (`Patient/1`, absolute URLs, `_history`), shared with
//!   extraction.

mod eval;
mod lex;
mod node;
mod parse;
mod reference;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

pub use node::Node;
pub use reference::{LiteralReference, is_fhir_id, parse_literal_reference};

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirPathError {
    /// Not FHIRPath (or not the part of its grammar we recognise at all).
    #[error("FHIRPath syntax error at offset {offset}: {message}")]
    Parse { offset: usize, message: String },
    /// Valid FHIRPath that this subset does not evaluate.
    #[error("unsupported FHIRPath construct: {0}")]
    Unsupported(String),
    /// The data made the expression fail, e.g. several values where FHIRPath wants one.
    #[error("FHIRPath evaluation error: {0}")]
    Evaluation(String),
}

type Result<T> = std::result::Result<T, FhirPathError>;

/// A parsed FHIRPath expression, cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Expression {
    source: Arc<str>,
    root: Arc<parse::Expr>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&&*self.source).finish()
    }
}

impl Expression {
    /// Parses an expression once; keep the result and evaluate it for every resource.
    pub fn parse(source: &str) -> Result<Self> {
        Ok(Expression {
            source: source.into(),
            root: Arc::new(parse::parse(source)?),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fails with the first construct this subset cannot evaluate, without evaluating anything:
    /// evaluation alone would miss an unsupported function inside a `where` over no items.
    pub fn check_supported(&self) -> Result<()> {
        eval::check(&self.root)
    }

    /// Evaluates the expression with the resource as context (`Patient.name` on a Patient).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<Node<'a>>> {
        eval::evaluate(&self.root, Node::resource(resource), resource)
    }

    /// Evaluates the expression with `focus` as context and `resource` as `%resource`: how a
    /// composite parameter's components (`code`, `value.as(Quantity)`) are evaluated against each
    /// node its own expression selected.
    pub fn evaluate_at<'b>(
        &self,
        focus: &'b Node<'_>,
        resource: &'b Value,
    ) -> Result<Vec<Node<'b>>> {
        eval::evaluate(&self.root, focus.reborrow(), resource)
    }
}
