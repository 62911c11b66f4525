//! The floor under stepgate: a pingora proxy that only forwards every
//! request to one upstream, with the same pingora, allocator, thread
//! layout and profile as stepgate, for `scripts/load-test` to measure
//! beside it.
//!
//! Usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR [THREADS [steal|no-steal]]
//! (one thread, no work stealing by default, as stepgate with one thread).

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR [THREADS [steal|no-steal]]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let work_stealing = args.get(4).is_some_and(|s| s == "steal");
    // Stopped by the load run's SIGTERM: no grace period to wait out.
    let conf = ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
