//! How an app is protected: inline (the gateway proxies it) or by
//! forward-auth (a proxy in front asks the gateway about each request).

use serde::Deserialize;

/// Which ways the gateway protects an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppMode {
    /// The gateway proxies the app's requests to its upstreams.
    #[default]
    Inline,
    /// A proxy in front (nginx, Caddy, Traefik, HAProxy, Envoy) asks the
    /// gateway and reaches the app itself; the app has no upstreams here.
    ForwardAuth,
    /// Both: the gateway proxies, and answers a proxy in front too.
    Both,
}

impl AppMode {
    /// Whether the gateway proxies the app's requests.
    pub fn inline(self) -> bool {
        matches!(self, AppMode::Inline | AppMode::Both)
    }

    /// Whether the gateway answers forward-auth questions about the app.
    pub fn forward_auth(self) -> bool {
        matches!(self, AppMode::ForwardAuth | AppMode::Both)
    }
}
