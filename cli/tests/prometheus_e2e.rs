//! Observability from the outside: a real Prometheus scrapes a real gateway and answers
//! `palisade_pack_info` through its HTTP API; and every metric the shipped alert rules and the
//! Grafana dashboard use is one the code exports, so a rename cannot silently blind an alert.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod gateway_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_support::{pack, Dir, GatewayProcess};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_gateway_and_answers_pack_info() {
    let dir = Dir::new();
    let pack_file = dir.write(
        "pack.yaml",
        &pack("http://127.0.0.1:9/v1", "4.5.6", "audit-logger", ""),
    );
    let gw = GatewayProcess::start(&pack_file, dir.path(), &[]);
    let target = gw.url.trim_start_matches("http://").to_owned();
    let port = test_support::free_port();
    let config = dir.write(
        "prometheus.yml",
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: palisade\n    static_configs:\n      - targets: ['{target}']\n"),
    );
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus must be installed (.ci/run installs Debian's prometheus)");
    let _prom = Prometheus(child);
    let api = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let a = get(&api, "/api/v1/query?query=palisade_pack_info").unwrap_or_default();
        if a.contains("\"version\":\"4.5.6\"") {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned palisade_pack_info: {a}"
        );
        std::thread::park_timeout(Duration::from_millis(200));
    };
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let metric = &v["data"]["result"][0]["metric"];
    assert_eq!(metric["pack"], "test");
    assert_eq!(metric["environment"], "dev");
    assert_eq!(metric["hash"].as_str().unwrap().len(), 64);
}

/// `palisade_…` names in `text`, with histogram suffixes folded to the family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("palisade_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map_or(n.clone(), str::to_owned)
            });
        out.insert(family);
    }
    out
}

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn every_metric_in_the_rules_and_dashboard_is_exported_by_the_code() {
    let mut code = String::new();
    sources(&root().join("gateway/src"), &mut code);
    sources(&root().join("control-plane/src"), &mut code);
    let exported: BTreeSet<String> = metric_names(&code)
        .into_iter()
        .filter(|n| code.contains(&format!("\"{n}\"")))
        .collect();
    let rules =
        std::fs::read_to_string(root().join("configs/prometheus/palisade.rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("configs/grafana/palisade.json")).unwrap();
    for name in metric_names(&rules).union(&metric_names(&dashboard)) {
        let recorded = rules.contains(&format!("record: {name}")) || name.contains(':');
        assert!(
            recorded || exported.contains(name),
            "`{name}` is used by a rule or panel but no code exports it (exported: {exported:?})"
        );
    }
}
