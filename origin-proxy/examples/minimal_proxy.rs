//! cargo run --release -p origin-proxy --example minimal_proxy -- 127.0.0.1:8080 127.0.0.1:9001
//!
//! The smallest Pingora proxy there is: one upstream, no routing, auth, metrics or logs. It is
//! `bench/proxy`'s baseline row, so that the table shows what Pingora itself costs and what
//! origin-proxy's features add on top. Same allocator and runtime settings as origin-proxy.
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Minimal {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: minimal_proxy LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // Exit promptly on SIGTERM (pingora's default grace period is minutes).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, Minimal { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
