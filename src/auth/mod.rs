//! Access control: verified bearer tokens ([`token`]), who the caller is ([`caller`]), what its
//! token's scopes allow ([`scope`]),
//! what its role allows ([`role`]), how both become conditions inside every query ([`access`]),
//! the pseudonymous views some roles get ([`pseudonymise`]), and what patients' Consents allow
//! ([`consent`]).
//!
//! The service layer applies them ([`crate::service::guard`]); the HTTP layer only turns a
//! verified token into a [`Caller`].

pub mod access;
pub mod caller;
pub mod consent;
pub mod pseudonymise;
pub mod role;
pub mod scope;
pub mod token;

pub use caller::Caller;
pub use role::Role;
pub use scope::Permission;
