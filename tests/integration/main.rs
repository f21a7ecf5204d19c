//! Integration tests over real sockets: the gate between a real OpenID provider (oidc-provider, configured as
//! Logto) and a real upstream, on loopback ports the kernel chooses.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod keys;
mod proxying;
mod security;
mod sign_in;
