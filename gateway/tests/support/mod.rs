//! Test harness: an in-process gateway on port 0 in front of the mock provider, packs written
//! to a private temp directory, and an `Enforcement` that records every hook call.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "shared test support: each test binary uses a different part"
)]

pub use test_support::{client, mock};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use gateway::{
    Admission, Admit, Enforcement, Failure, Gateway, GatewayConfig, GatewayState, Release,
    RequestMeta, Settled,
};
use tokio::sync::oneshot;

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "palisade-gw-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pack routing `gpt-4o-mini` and `text-embedding-3-small` to the mock, with `chain` and
/// extra `policy:` YAML.
pub fn pack(base_url: &str, version: &str, chain: &str, policy: &str) -> String {
    format!(
        "pack:\n  name: test\n  version: {version}\n  enabled: true\npolicies:\n  chain: [{chain}]\nproviders:\n  mock:\n    base_url: {base_url}\n    api_key_env: PALISADE_TEST_PROVIDER_KEY\n    connect_timeout_ms: 1000\n    first_byte_timeout_ms: 2000\nmodels:\n  gpt-4o-mini:\n    input_usd_per_mtok: 0.15\n    output_usd_per_mtok: 0.6\n  text-embedding-3-small: {{}}\n  renamed:\n    upstream_model: gpt-4o-mini-2024-07-18\n{policy}"
    )
}

/// A running in-process gateway.
pub struct TestGateway {
    pub url: String,
    pub state: Arc<GatewayState>,
    pub dir: TempDir,
    pub pack_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(pack_text: &str, enforcement: Arc<dyn Enforcement>) -> Self {
        Self::start_with(pack_text, enforcement, |_| {}).await
    }

    pub async fn start_with(
        pack_text: &str,
        enforcement: Arc<dyn Enforcement>,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let dir = TempDir::new("inproc");
        let pack_path = dir.write("pack.yaml", pack_text);
        let mut config = GatewayConfig::new(&pack_path, "dev");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.watch = false;
        tweak(&mut config);
        let gw = Gateway::bind(config, enforcement).await.unwrap();
        let url = gw.url();
        let state = Arc::clone(gw.state());
        let (tx, rx) = oneshot::channel::<()>();
        let join = client::spawn(gw.run(async move {
            let _ = rx.await;
        }));
        Self {
            url,
            state,
            dir,
            pack_path,
            stop: Some(tx),
            join: Some(join),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A chat completion (JSON, `gpt-4o-mini`) through this gateway.
    pub async fn chat(&self, text: &str) -> client::Reply {
        let body = client::chat("gpt-4o-mini", text, false);
        client::post(
            &client::client(),
            &self.api("/v1/chat/completions"),
            &body,
            None,
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            j.await.unwrap();
        }
    }

    pub fn path(&self) -> &Path {
        &self.pack_path
    }
}

/// One hook call.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Admitted,
    Settled { usage_total: Option<u64> },
    Failed { what: String, admitted: bool },
}

/// Records every hook call with its request id.
#[derive(Debug)]
pub struct Recorder {
    tx: mpsc::Sender<(String, Event)>,
}

impl Recorder {
    pub fn new() -> (Arc<Self>, mpsc::Receiver<(String, Event)>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Self { tx }), rx)
    }
}

impl Enforcement for Recorder {
    fn admit(&self, meta: &RequestMeta) -> Admit {
        let _ = self.tx.send((meta.id.to_string(), Event::Admitted));
        Admit::Ready(Ok(Admission {
            remaining_usd: Some(7.0),
            ..Admission::default()
        }))
    }

    fn settled(&self, meta: &RequestMeta, admission: Admission, s: &Settled) -> Release {
        assert_eq!(admission.remaining_usd, Some(7.0));
        let _ = self.tx.send((
            meta.id.to_string(),
            Event::Settled {
                usage_total: s.usage.map(|u| u.total_tokens),
            },
        ));
        Release::Now
    }

    fn failed(&self, meta: &RequestMeta, admission: Option<Admission>, f: &Failure<'_>) -> Release {
        let what = match f {
            Failure::Refused(e) => e.code().to_owned(),
            Failure::UpstreamStatus(s) => format!("upstream_status_{}", s.as_u16()),
            Failure::StreamBroken => "stream_broken".to_owned(),
            Failure::Cancelled { mid_stream } => format!("cancelled_mid_stream_{mid_stream}"),
        };
        let _ = self.tx.send((
            meta.id.to_string(),
            Event::Failed {
                what,
                admitted: admission.is_some(),
            },
        ));
        Release::Now
    }
}

/// Every event recorded for one request id so far.
pub fn events_for(
    rx: &mpsc::Receiver<(String, Event)>,
    log: &mut Vec<(String, Event)>,
    id: &str,
) -> Vec<Event> {
    log.extend(rx.try_iter());
    log.iter()
        .filter(|(i, _)| i == id)
        .map(|(_, e)| e.clone())
        .collect()
}
