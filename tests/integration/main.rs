//! Integration tests over real sockets: the gate between a real OpenID provider (oidc-provider, configured as
//! Logto) and a real upstream, on loopback ports the kernel chooses.

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod assertion;
mod attacks;
mod bearer;
mod browser;
mod bypass;
mod cli;
mod conformance;
mod deploy;
mod faults;
mod forward_auth;
mod front;
mod fuzz_smoke;
mod keys;
mod logto;
mod policy;
mod production;
mod protected_app;
mod proxying;
mod redis_ha;
mod security;
mod sessions;
mod sign_in;
mod subdomains;
mod upstream_http1;
mod upstreams;
