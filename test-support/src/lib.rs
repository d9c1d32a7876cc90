//! Real parts for tests: `redis-server` and PostgreSQL started on free loopback ports in
//! temporary directories, stopped when their guard drops; the one mock LLM provider (`mock`,
//! the only part that is not real, because no provider is reachable from a test) and a small
//! HTTP client (`client`), and an OTLP trace receiver built from the official protobuf
//! definitions (`otlp`).
//!
//! Tests never use fixed ports: a port is taken from the kernel (bind to port 0, read it, close),
//! and because another process may grab it before the server binds, starting retries on a new
//! port when the server exits at once. Readiness is polled with a deadline, never slept for.
//! The binaries come from the machine (`.ci/run` installs them); a missing one is a test failure
//! that says what to install, not a skip.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test support fails loudly by design"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test harness may sleep between readiness polls; it runs on no async runtime"
)]

pub mod client;
pub mod mock;
pub mod otlp;
mod postgres;
mod redis;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use postgres::PostgresServer;
pub use redis::{ping as redis_ping, RedisServer};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Poll `ready` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}
