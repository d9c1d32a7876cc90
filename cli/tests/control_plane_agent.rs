//! The real gateway agent (`gateway::control::Agent`) against the real control-plane binary,
//! so the two sides of the protocol stay in step: deploy → SYNCED, a pack the gateway refuses →
//! REJECTED while the old version keeps serving, rollback → SYNCED again, agent stopped → OFFLINE.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use std::sync::Arc;
use std::time::Duration;

use cp_support::{eventually, pack, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use gateway::control::{Agent, AgentConfig, Applied, ControlClient, PackApplier};
use palisade_wire::gateway::{ActiveSource, AttemptError, Counters, Instance};
use policy_engine::{CompileOptions, Diagnostics};

/// Compiles like a gateway would and refuses what a gateway refuses (a disabled pack included).
struct CompileOnly;

fn first(d: &Diagnostics) -> AttemptError {
    let e = d.first_error().unwrap();
    AttemptError {
        code: e.code.as_str().to_owned(),
        path: e.path.clone(),
        message: e.message.clone(),
    }
}

impl PackApplier for CompileOnly {
    async fn apply(&self, yaml: String, _source: ActiveSource) -> Result<Applied, AttemptError> {
        let loaded = policy_engine::load(&yaml).map_err(|d| first(&d))?;
        let options = CompileOptions {
            pii_hash_key: Some(b"test".to_vec()),
        };
        let compiled = loaded
            .compile(Some("dev"), &options)
            .map_err(|d| first(&d))?;
        compiled.check_activatable().map_err(|d| first(&d))?;
        Ok(Applied {
            version: loaded.document.pack.version.clone(),
            hash: loaded.hash.to_string(),
        })
    }

    fn counters(&self) -> Counters {
        Counters::default()
    }
}

fn the_gateway_agent_syncs_is_rejected_rolls_back_and_goes_offline(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    cp.push(PACK_V1);
    let disabled =
        pack("1.1.0", 30).replace("  version: 1.1.0\n", "  version: 1.1.0\n  enabled: false\n");
    cp.push(&disabled);
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["deploy", "support", "1.0.0", "-e", "dev", "--note", "first"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let key = cp.create_key("gateway", Some("dev"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = AgentConfig {
        instance: Instance {
            id: "gw:e2e/1".to_owned(),
            environment: "dev".to_owned(),
            pack: "support".to_owned(),
            build: "test".to_owned(),
            started_at: "2025-01-01T00:00:00Z".to_owned(),
        },
        state_dir: state.path().to_owned(),
        long_poll: Duration::from_secs(5),
        report_interval: Duration::from_millis(200),
    };
    let client = ControlClient::new(&cp.url, &key).unwrap();
    let agent = Agent::new(client, Arc::new(CompileOnly), cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    #[expect(
        clippy::disallowed_methods,
        reason = "the test's agent, stopped and awaited by the test"
    )]
    let task = rt.spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let id = "gw:e2e/1";
    let state_is = |want: &'static str| {
        eventually(Duration::from_secs(15), want, || {
            (cp.state_of(id).as_deref() == Some(want)).then_some(())
        });
    };
    state_is("SYNCED");

    let o = cp.cli(
        Some(ADMIN_KEY),
        &[
            "deploy",
            "support",
            "1.1.0",
            "-e",
            "dev",
            "--note",
            "disabled by mistake",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    state_is("REJECTED");
    let s = cp.status_json();
    let g = &s["entries"][0]["gateways"][0];
    assert_eq!(g["last_attempt"]["error"]["code"], "PACK_DISABLED");
    assert_eq!(
        g["active"]["version"], "1.0.0",
        "the old version keeps serving"
    );

    let o = cp.cli(
        Some(ADMIN_KEY),
        &["rollback", "support", "-e", "dev", "--note", "back"],
    );
    assert!(o.status.success(), "{}", text(&o));
    state_is("SYNCED");
    assert_eq!(cp.cli(Some(ADMIN_KEY), &["status"]).status.code(), Some(0));

    stop.send(()).unwrap();
    rt.block_on(task).unwrap();
    state_is("OFFLINE");
    assert_eq!(cp.cli(Some(ADMIN_KEY), &["status"]).status.code(), Some(1));
}

on_both_backends!(the_gateway_agent_syncs_is_rejected_rolls_back_and_goes_offline,);
