//! Pingora's own floor, for graft-bench's side by side: a proxy with no
//! graft in it (no zone, no step, no connection limit, no timeouts of
//! graft-edge's), every request to one origin, on the threads given.
//!
//! ```text
//! pingora_floor <listen addr> <origin addr> <threads>
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};

struct Floor {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, origin, threads] = args.as_slice() else {
        eprintln!("usage: pingora_floor <listen addr> <origin addr> <threads>");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: threads.parse().expect("threads: a number"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Floor {
            origin: origin.parse().expect("origin: an address"),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
