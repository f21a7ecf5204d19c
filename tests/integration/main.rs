//! Integration tests over real sockets: the gate between a real OpenID provider (oidc-provider, configured as
//! Logto) and a real upstream, on loopback ports the kernel chooses. One file per threat (smuggling, spoofing,
//! redirects, tokens, bypass, limits) or feature.

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod assertion;
mod bearer;
mod browser;
mod bypass;
mod caddy;
mod cli;
mod conformance;
mod deploy;
mod dual_path;
mod faults;
mod forward_auth;
mod frameworks;
mod front;
mod fuzz_smoke;
mod in_front;
mod keys;
mod limits;
mod listening;
mod logto;
mod max_age;
mod operations;
mod policy;
mod protected_app;
mod proxying;
mod redirects;
mod redis_ha;
mod room;
mod sessions;
mod sign_in;
mod smuggling;
mod spoofing;
mod stalls;
mod stored_sessions;
mod subdomains;
mod tls;
mod tokens;
mod upstream_http1;
mod upstreams;
