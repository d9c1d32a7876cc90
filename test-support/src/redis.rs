//! A `redis-server` child process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// A `redis-server` in a temp dir, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start on a free port.
    pub fn start() -> Self {
        for _ in 0..20 {
            if let Some(s) = Self::start_on(free_port()) {
                return s;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Start on `port`; `None` when the port was taken (the server exits at once).
    pub fn start_on(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it with apt-get)");
        let mut exited = false;
        let up = wait_until(Duration::from_secs(10), || {
            exited = child.try_wait().ok().flatten().is_some();
            exited || ping(port)
        });
        if up && !exited {
            return Some(Self {
                child,
                port,
                _dir: dir,
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `GET key` as an integer (0 when absent), over a raw RESP exchange.
    pub fn get(&self, key: &str) -> i64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        write!(s, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).expect("send GET");
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).expect("read GET reply");
        let reply = String::from_utf8_lossy(&buf[..n]);
        reply.lines().nth(1).map_or(0, |l| l.parse().unwrap_or(0))
    }

    /// Keep the server busy running a script for `busy`: every other command waits behind it
    /// (what a loaded or briefly hung Redis looks like to a client). Returns once the server has
    /// stopped answering (about 200 ms into `busy`); the connection is closed when the returned
    /// stream drops.
    pub fn stall(&self, busy: Duration) -> TcpStream {
        const LUA: &str = "local function us() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end local s = us() while us() - s < tonumber(ARGV[1]) do end return 1";
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let us = busy.as_micros().to_string();
        write!(
            s,
            "*4\r\n$4\r\nEVAL\r\n${}\r\n{LUA}\r\n$1\r\n0\r\n${}\r\n{us}\r\n",
            LUA.len(),
            us.len()
        )
        .expect("send EVAL");
        assert!(
            wait_until(Duration::from_secs(5), || !ping(self.port)),
            "redis did not start the stalling script"
        );
        s
    }

    /// Stop the server now (the port is free again afterwards).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis answers `PING` on `port`.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}
