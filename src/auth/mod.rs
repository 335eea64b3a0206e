//! Access control: who is calling ([`token`]: bearer JWTs, verified and issued).
pub mod token;
