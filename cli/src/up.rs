//! `palisade up`: the whole system on one machine, in one command and one process tree.
//!
//! It starts a control plane on SQLite, one gateway per environment (dev, staging, prod) under
//! that control plane, and — only when no `OPENAI_API_KEY` is set — a local mock provider that
//! says so in every answer. It pushes the sample pack (pointed at the mock when there is one)
//! and deploys it to dev, prints the URLs, a `curl` and an SDK example, and stops every child
//! on Ctrl-C or SIGTERM (SIGTERM to each, then SIGKILL after a grace period). If a child dies,
//! the rest are stopped and the command fails, so a half-running stack never looks healthy.
//!
//! Fixed local ports by default (control plane 8070, gateways 8081–8083, mock 8090);
//! `--port-base 0` lets every part pick a free port, which is what the test uses. State (the
//! registry, the admin key, each gateway's persisted pack and audit log) lives in `--dir`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::cp_client::CpClient;

const SAMPLE_PACK: &str = include_str!("../../configs/support.yaml");
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
    /// The pack to push and deploy to dev (default: the bundled sample pack).
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

fn up(args: &UpArgs, rt: &tokio::runtime::Runtime) -> Result<ExitCode, String> {
    let dir = std::path::absolute(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let admin_key = admin_key(&dir)?;
    let provider_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let mock_url = match provider_key {
        Some(_) => None,
        None => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port(args.port_base, 20)));
            let listener = rt
                .block_on(crate::up_mock::bind(addr))
                .map_err(|e| format!("mock provider on {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            rt.spawn(crate::up_mock::serve(listener));
            Some(format!("http://{bound}/v1"))
        }
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

    let text = match &args.pack {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => SAMPLE_PACK.to_owned(),
    };
    let text = match &mock_url {
        Some(url) => text.replace("https://api.openai.com/v1", url),
        None => text,
    };
    let loaded = policy_engine::load(&text).map_err(|d| format!("the pack does not load:\n{d}"))?;
    let (name, version) = (
        loaded.document.pack.name.clone(),
        loaded.document.pack.version.clone(),
    );
    let push = client
        .call(
            Method::POST,
            "/v1/packs",
            Some(&json!({"yaml": text, "note": "palisade up: the sample pack, deployed to dev"})),
        )
        .map_err(|_| "push failed".to_owned())?;
    if !push.ok() {
        return Err(format!(
            "push refused ({}): {}; start with an empty --dir to reset",
            push.status, push.body
        ));
    }
    client
        .expect_ok(Method::POST, "/v1/deploy", Some(&json!({"pack": name, "version": version, "environment": "dev", "note": "palisade up"})))
        .map_err(|_| "deploy to dev failed".to_owned())?;

    let mut gateways = Vec::new();
    for (i, env) in ENVIRONMENTS.iter().enumerate() {
        let key = client
            .expect_ok(
                Method::POST,
                "/v1/keys",
                Some(&json!({"role": "gateway", "environment": env})),
            )
            .map_err(|_| format!("cannot create the {env} gateway key"))?;
        let key = key["key"].as_str().unwrap_or_default().to_owned();
        let work = dir.join(env);
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
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
            .env(
                "OPENAI_API_KEY",
                provider_key.as_deref().unwrap_or(MOCK_KEY),
            );
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
    summary(
        &cp_url,
        &gateways,
        mock_url.as_deref(),
        &name,
        &version,
        &dir,
    );
    let code = rt.block_on(watch(&mut stack));
    drop(stack);
    eprintln!("palisade up: stopped");
    Ok(code)
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

fn summary(
    cp: &str,
    gateways: &[(&str, String)],
    mock: Option<&str>,
    pack: &str,
    version: &str,
    dir: &Path,
) {
    println!("\npalisade up: running (Ctrl-C stops everything)\n");
    println!(
        "  control plane   {cp}   (admin key in {})",
        dir.join("admin-key").display()
    );
    for (env, url) in gateways {
        let note = if *env == "dev" {
            format!("enforcing {pack} {version}")
        } else {
            "waiting for a promotion".to_owned()
        };
        println!("  {env:<8} gateway {url}   {note}");
    }
    match mock {
        Some(url) => println!("  MOCK PROVIDER   {url}   (no OPENAI_API_KEY set: answers are canned, no model is called)"),
        None => println!("  provider        OpenAI, with the key from OPENAI_API_KEY"),
    }
    let dev = gateways.first().map_or("", |(_, u)| u.as_str());
    println!("\nTry it:\n");
    println!("  curl -s {dev}/v1/chat/completions -H 'content-type: application/json' \\");
    println!("    -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi, I am jane@example.com\"}}]}}'");
    println!("\n  python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{dev}/v1\", api_key=\"any\"); print(c.chat.completions.create(model=\"gpt-4o-mini\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}]).choices[0].message.content)'");
    println!(
        "\n  PALISADE_CONTROL_PLANE={cp} PALISADE_SERVICE_KEY=$(cat {}) palisade status\n",
        dir.join("admin-key").display()
    );
}
