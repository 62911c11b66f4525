//! stepgate: an MFA gateway. A pingora reverse proxy that decides per
//! route who must prove what, runs the challenges on its own pages, and
//! hands apps a signed assertion of who is calling.

pub mod admin;
pub mod assertion;
pub mod audit;
pub mod cache;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod directory;
pub mod edge;
pub mod factors;
pub mod forward_auth;
pub mod gateway;
pub mod geo;
pub mod hash_gate;
pub mod health;
pub mod inspect;
pub mod live;
pub mod logging;
pub mod methods;
pub mod metrics;
pub mod policy;
pub mod portal;
pub mod proxy;
pub mod server;
pub mod session;
pub mod store;
pub mod systemd;
pub mod throttle;
pub mod tickets;
pub mod upstreams;
pub mod users;

/// A map read on every request, keyed by what the gateway chose
/// (configured hosts, user names, session digests) rather than by a
/// client at will: foldhash costs a fraction of SipHash there.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
