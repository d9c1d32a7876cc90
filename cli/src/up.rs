//! `palisade up`: the whole system on one machine, in one command and one process tree.
//!
//! It starts a control plane on SQLite, one gateway per environment (dev, staging, prod) under
//! that control plane, and — only when no `OPENAI_API_KEY` is set — a local mock provider that
//! says so in every answer and echoes what it received. It pushes the pack file
//! (`configs/support.yaml` when run from the repository, byte for byte, so its hash is the one
//! `palisade hash` prints and an edited copy pushes as the user expects), deploys it to dev when
//! dev runs nothing yet, prints the URLs, and stops every child on Ctrl-C or SIGTERM (SIGTERM to
//! each, then SIGKILL after a grace period). If a child dies, the rest are stopped and the
//! command fails, so a half-running stack never looks healthy.
//!
//! The mock is chosen by the environment, never by rewriting the pack: each provider of the pack
//! names a `base_url_env` (the sample says `OPENAI_BASE_URL`), and `up` sets that variable on
//! the gateways it starts. A provider without one cannot be pointed at the mock; `up` says so.
//!
//! A second `up` on the same `--dir` resumes: the registry keeps what was pushed and deployed
//! (an edited pack that keeps its version is reported, not forced), each environment's gateway
//! key is reused from `DIR/ENV/gateway-key.json` while the registry still accepts it, and the
//! gateways come back under their previous ids (host and port), so no OFFLINE twins remain.
//!
//! Fixed local ports by default (control plane 8070, gateways 8081–8083, mock 8090);
//! `--port-base 0` lets every part pick a free port, which is what the test uses. State (the
//! registry, the admin key, each gateway's key, persisted pack and audit log) lives in `--dir`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use palisade_wire::error::ErrorCode;
use serde_json::{json, Value};

use crate::cp_client::CpClient;

/// The sample pack, for an `up` run outside the repository (a copy of `configs/support.yaml`).
const SAMPLE_PACK: &str = include_str!("../../configs/support.yaml");
const SAMPLE_PATH: &str = "configs/support.yaml";
const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
const MOCK_KEY: &str = "mock-provider-key";

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Where the registry, keys, persisted packs and audit logs live.
    #[arg(long, default_value = ".palisade")]
    dir: PathBuf,
    /// Control plane on BASE, gateways on BASE+11..BASE+13, mock provider on BASE+20; 0 picks
    /// free ports.
    #[arg(long, default_value_t = 8070)]
    port_base: u16,
    /// The pack to push and deploy to dev (default: configs/support.yaml, or the bundled copy
    /// of it when that file is not here).
    #[arg(long)]
    pack: Option<PathBuf>,
}

struct Stack {
    children: Vec<(String, Child)>,
}

impl Drop for Stack {
    /// Stop in reverse start order: gateways first, so none of them polls a gone control plane.
    fn drop(&mut self) {
        self.children.reverse();
        for (_, c) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, c) in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("palisade up: {name} did not stop in time; killing it");
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

pub(crate) fn run(args: &UpArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match up(args, &rt) {
        Ok(code) => code,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("palisade up: {message}");
    ExitCode::FAILURE
}

fn port(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base.saturating_add(offset)
    }
}

/// The pack `up` deploys: its text, exactly as read, and where it came from.
fn pack_source(args: &UpArgs) -> Result<(String, String), String> {
    let path = match &args.pack {
        Some(p) => p.clone(),
        None if Path::new(SAMPLE_PATH).is_file() => PathBuf::from(SAMPLE_PATH),
        None => {
            return Ok((
                SAMPLE_PACK.to_owned(),
                format!("the bundled copy of {SAMPLE_PATH}"),
            ))
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((text, path.display().to_string()))
}

/// The variables that point every provider of the pack at the mock: each provider's
/// `base_url_env` set to the mock's URL and its `api_key_env` to a placeholder key.
fn mock_environment(
    doc: &policy_engine::pack::PackDocument,
    mock_url: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    let default = policy_engine::pack::ProviderSpec::default_openai();
    let providers: Vec<(&str, &policy_engine::pack::ProviderSpec)> = if doc.providers.is_empty() {
        vec![(policy_engine::pack::DEFAULT_PROVIDER, &default)]
    } else {
        doc.providers.iter().map(|(n, p)| (n.as_str(), p)).collect()
    };
    for (name, p) in providers {
        let Some(var) = &p.base_url_env else {
            let var = match p.kind {
                policy_engine::pack::ProviderKind::OpenAi => "OPENAI_BASE_URL",
                policy_engine::pack::ProviderKind::Anthropic => "ANTHROPIC_BASE_URL",
            };
            return Err(format!(
                "provider `{name}` has no base_url_env, so its traffic cannot be pointed at the local mock \
                 provider: set OPENAI_API_KEY to use the real providers, or add \
                 `base_url_env: {var}` to providers.{name} in the pack"
            ));
        };
        vars.push((var.clone(), mock_url.to_owned()));
        if let Some(key) = &p.api_key_env {
            vars.push((key.clone(), MOCK_KEY.to_owned()));
        }
    }
    Ok(vars)
}

fn up(args: &UpArgs, rt: &tokio::runtime::Runtime) -> Result<ExitCode, String> {
    let dir = std::path::absolute(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let admin_key = admin_key(&dir)?;
    let (text, source) = pack_source(args)?;
    let loaded = policy_engine::load(&text).map_err(|d| format!("{source} does not load:\n{d}"))?;
    let (name, version) = (
        loaded.document.pack.name.clone(),
        loaded.document.pack.version.clone(),
    );
    let real_provider = std::env::var("OPENAI_API_KEY")
        .ok()
        .is_some_and(|k| !k.is_empty());
    let (mock_url, gateway_env) = if real_provider {
        (None, Vec::new())
    } else {
        let addr = SocketAddr::from(([127, 0, 0, 1], port(args.port_base, 20)));
        let listener = rt
            .block_on(crate::up_mock::bind(addr))
            .map_err(|e| format!("mock provider on {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let url = format!("http://{bound}/v1");
        let vars = mock_environment(&loaded.document, &url)?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the local mock provider: lives as long as `up`"
        )]
        rt.spawn(crate::up_mock::serve(listener));
        (Some(url), vars)
    };
    let mut stack = Stack {
        children: Vec::new(),
    };
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the palisade binary: {e}"))?;

    let mut cp = Command::new(&exe);
    cp.args([
        "control-plane",
        "--listen",
        &format!("127.0.0.1:{}", port(args.port_base, 0)),
        "--database",
    ])
    .arg(dir.join("registry.db"))
    .args(["--report-interval-ms", "1000"])
    .env("PALISADE_ADMIN_KEY", &admin_key);
    let cp_url = spawn(
        &mut stack,
        "control plane",
        cp,
        "palisade control-plane listening on ",
    )?;
    let client = CpClient::with_key(&cp_url, &admin_key)
        .map_err(|_| "cannot reach the control plane".to_owned())?;

    let push = client
        .call(
            Method::POST,
            "/v1/packs",
            Some(&json!({"yaml": text, "note": format!("palisade up: {source}")})),
        )
        .map_err(|_| "push failed".to_owned())?;
    let pushed = if push.ok() {
        format!(
            "{} ({source})",
            push.body["status"].as_str().unwrap_or("pushed")
        )
    } else if push.error().map(|e| e.code) == Some(ErrorCode::VersionConflict) {
        eprintln!(
            "palisade up: {source} was not pushed: {} {version} is in the registry with other content; \
             raise pack.version to push the edit",
            name
        );
        "kept the registry's copy".to_owned()
    } else {
        return Err(format!(
            "push of {source} refused ({}): {}",
            push.status, push.body
        ));
    };
    if !desired_versions(&client, &name)?.contains_key("dev") {
        client
            .expect_ok(Method::POST, "/v1/deploy", Some(&json!({"pack": name, "version": version, "environment": "dev", "note": "palisade up: first start"})))
            .map_err(|_| "deploy to dev failed".to_owned())?;
    }

    let mut gateways = Vec::new();
    for (i, env) in ENVIRONMENTS.iter().enumerate() {
        let work = dir.join(env);
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let key = gateway_key(&client, &work, env)?;
        let offset = 11 + u16::try_from(i).unwrap_or(0);
        let mut gw = Command::new(&exe);
        gw.current_dir(&work)
            .args([
                "gateway",
                "--control-plane",
                &cp_url,
                "--environment",
                env,
                "--pack",
                &name,
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", port(args.port_base, offset)),
                "--state-dir",
                "state",
            ])
            .env("PALISADE_GATEWAY_KEY", &key)
            .envs(gateway_env.iter().map(|(k, v)| (k, v)));
        let url = spawn(
            &mut stack,
            &format!("{env} gateway"),
            gw,
            "palisade gateway listening on ",
        )?;
        gateways.push((*env, url));
    }
    let dev = gateways.first().map(|(_, u)| u.clone()).unwrap_or_default();
    wait_ready(&dev)?;
    let desired = desired_versions(&client, &name)?;
    summary(&Summary {
        cp: &cp_url,
        admin_key: &admin_key,
        gateways: &gateways,
        desired: &desired,
        mock: mock_url.as_deref(),
        mock_vars: &gateway_env,
        pack: &name,
        pushed: &pushed,
        dir: &dir,
    });
    let code = rt.block_on(watch(&mut stack));
    drop(stack);
    eprintln!("palisade up: stopped");
    Ok(code)
}

/// Each environment's desired version of `pack`, from the status matrix.
fn desired_versions(
    client: &CpClient,
    pack: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let status = client
        .expect_ok(Method::GET, "/v1/status", None)
        .map_err(|_| "cannot read the status".to_owned())?;
    Ok(status["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["pack"] == pack)
        .filter_map(|e| {
            Some((
                e["environment"].as_str()?.to_owned(),
                e["desired"]["version"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// The environment's gateway key: the one this directory holds while the registry still accepts
/// it, otherwise a new one (kept for the next start).
fn gateway_key(client: &CpClient, work: &Path, env: &str) -> Result<String, String> {
    let path = work.join("gateway-key.json");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let saved: Value = serde_json::from_str(&saved).unwrap_or(Value::Null);
        let keys = client
            .expect_ok(Method::GET, "/v1/keys", None)
            .map_err(|_| "cannot list keys".to_owned())?;
        let active =
            keys["keys"].as_array().into_iter().flatten().any(|k| {
                k["id"] == saved["id"] && k["revoked_at"].is_null() && !saved["id"].is_null()
            });
        if let (true, Some(key)) = (active, saved["key"].as_str()) {
            return Ok(key.to_owned());
        }
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let created = client
        .expect_ok(
            Method::POST,
            "/v1/keys",
            Some(&json!({"role": "gateway", "environment": env})),
        )
        .map_err(|_| format!("cannot create the {env} gateway key"))?;
    let key = created["key"].as_str().unwrap_or_default().to_owned();
    write_private(&path, &json!({"id": created["id"], "key": key}).to_string())?;
    Ok(key)
}

/// Start a child and read its "listening on URL" line from stdout.
fn spawn(
    stack: &mut Stack,
    name: &str,
    mut cmd: Command,
    prefix: &'static str,
) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("cannot start the {name}: {e}"))?;
    let stdout = child.stdout.take();
    stack.children.push((name.to_owned(), child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Some(out) = stdout else { return };
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix(prefix) {
                let _ = tx.send(url.to_owned());
            } else {
                println!("{line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| format!("the {name} did not start (see its log above)"))
}

fn wait_ready(gateway: &str) -> Result<(), String> {
    let addr = gateway.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready(&addr) {
            return Ok(());
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    Err("the dev gateway did not become ready within 30 s".to_owned())
}

fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let mut buf = [0u8; 16];
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// Wait for Ctrl-C / SIGTERM (exit 0) or a child that dies (exit 1).
async fn watch(stack: &mut Stack) -> ExitCode {
    let signal = async {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    };
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return ExitCode::SUCCESS,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                for (name, c) in &mut stack.children {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("palisade up: the {name} exited ({status}); stopping the rest");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
}

/// The admin key of this `--dir`, created on first use (shown in the summary).
fn admin_key(dir: &Path) -> Result<String, String> {
    let path = dir.join("admin-key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok(k.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?,
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    let key = format!(
        "pal_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    write_private(&path, &key)?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

struct Summary<'a> {
    cp: &'a str,
    admin_key: &'a str,
    gateways: &'a [(&'a str, String)],
    desired: &'a std::collections::BTreeMap<String, String>,
    mock: Option<&'a str>,
    mock_vars: &'a [(String, String)],
    pack: &'a str,
    pushed: &'a str,
    dir: &'a Path,
}

fn summary(s: &Summary<'_>) {
    println!("\npalisade up: running (Ctrl-C stops everything)\n");
    println!(
        "  control plane   {}   (admin key in {})",
        s.cp,
        s.dir.join("admin-key").display()
    );
    println!(
        "  console         {}/   sign in with the admin key {}",
        s.cp, s.admin_key
    );
    println!("  pack            {}: {}", s.pack, s.pushed);
    for (env, url) in s.gateways {
        let note = match s.desired.get(*env) {
            Some(v) => format!("{} {v}", s.pack),
            None => "nothing deployed yet (promote or deploy to it)".to_owned(),
        };
        println!("  {env:<8} gateway {url}   {note}");
    }
    match s.mock {
        Some(url) => {
            let vars: Vec<&str> = s
                .mock_vars
                .iter()
                .filter(|(_, v)| v == url)
                .map(|(k, _)| k.as_str())
                .collect();
            println!(
                "  MOCK PROVIDER   {url}   (no OPENAI_API_KEY set; {} points the gateways here: it echoes what it received, no model is called)",
                vars.join(", ")
            );
        }
        None => {
            println!("  provider        the pack's providers, with the key from OPENAI_API_KEY")
        }
    }
    println!(
        "  audit logs      {}/ENV/audit (palisade audit tail {}/dev/audit)",
        s.dir.display(),
        s.dir.display()
    );
    let dev = s.gateways.first().map_or("", |(_, u)| u.as_str());
    println!("\nTry it:\n");
    println!("  curl -s {dev}/v1/chat/completions -H 'content-type: application/json' \\");
    println!("    -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi, I am jane@example.com\"}}]}}'");
    println!(
        "\n  PALISADE_CONTROL_PLANE={} PALISADE_SERVICE_KEY=$(cat {}) palisade status\n",
        s.cp,
        s.dir.join("admin-key").display()
    );
}
