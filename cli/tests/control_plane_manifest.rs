//! Export and import through the real binaries, on both backends: a manifest exported from one
//! control plane is planned (`--dry-run`, exit 2), imported (same hashes, one admin-log record
//! with the file's SHA-256), and planned again (exit 0); `--replace` deactivates what the
//! manifest lacks and lists it first; a newer format, a broken pack, a version conflict and a
//! missing role fail with their codes and write nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use control_plane::manifest::{file_sha256, Manifest, ManifestPack};
use cp_support::{pack, text, Backend, ControlPlane, ADMIN_KEY, PACK_V1};
use serde_json::Value;

fn billing(version: &str) -> String {
    PACK_V1
        .replace("name: support", "name: billing")
        .replace("1.0.0", version)
}

fn deploy(cp: &ControlPlane, pack: &str, version: &str, env: &str) {
    let o = cp.cli(
        Some(ADMIN_KEY),
        &["deploy", pack, version, "-e", env, "--note", "test"],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// The hash `env`'s pointer for `pack` names (`None`: nothing, or deactivated).
fn desired_hash(cp: &ControlPlane, env: &str, pack: &str) -> Option<String> {
    let s = cp.http(
        "GET",
        &format!("/v1/status?environment={env}"),
        Some(ADMIN_KEY),
        &[],
        None,
    );
    s.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pack"] == pack)
        .and_then(|e| e["desired"]["hash"].as_str().map(str::to_owned))
}

fn history(cp: &ControlPlane) -> Vec<Value> {
    let h = cp.http("GET", "/v1/history", Some(ADMIN_KEY), &[], None);
    h.body["records"].as_array().unwrap().clone()
}

fn import(cp: &ControlPlane, key: &str, file: &str, env: &str, flags: &[&str]) -> (i32, String) {
    let mut args = vec!["import", "--file", file, "--environment", env];
    args.extend(flags);
    let o = cp.cli(Some(key), &args);
    (o.status.code().unwrap(), text(&o))
}

fn export_then_dry_run_then_import_gives_the_same_hashes_and_a_second_dry_run_is_clean(
    backend: Backend,
) {
    let a = ControlPlane::start(backend, 200);
    a.push(PACK_V1);
    let support = a.push(&pack("1.1.0", 30));
    let bill = a.push(&billing("1.0.0"));
    deploy(&a, "support", "1.0.0", "dev");
    deploy(&a, "support", "1.1.0", "dev");
    deploy(&a, "billing", "1.0.0", "dev");
    let file = a.dir.path().join("dev.yaml").display().to_string();
    let o = a.cli(
        Some(ADMIN_KEY),
        &["export", "--environment", "dev", "--file", &file],
    );
    assert!(o.status.success(), "{}", text(&o));
    let manifest_text = std::fs::read_to_string(&file).unwrap();
    let manifest = Manifest::parse(&manifest_text).unwrap();
    assert_eq!(manifest.format_version, 1);
    assert_eq!(manifest.origin, a.url);
    let listed: Vec<(&str, &str)> = manifest
        .packs
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(listed, [("billing", "1.0.0"), ("support", "1.1.0")]);
    assert_eq!(manifest.packs[1].yaml, pack("1.1.0", 30), "exact bytes");

    let b = ControlPlane::start(backend, 200);
    let (code, out) = import(&b, ADMIN_KEY, &file, "staging", &["--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("added      billing 1.0.0"), "{out}");
    assert!(out.contains("added      support 1.1.0"), "{out}");
    assert!(
        out.contains("2 added, 0 modified, 0 unchanged, 0 removed"),
        "{out}"
    );
    let versions = b.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(versions.status, 404, "a dry run writes nothing");
    let records_before = history(&b).len();

    let (code, out) = import(&b, ADMIN_KEY, &file, "staging", &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(desired_hash(&b, "staging", "support"), Some(support));
    assert_eq!(desired_hash(&b, "staging", "billing"), Some(bill));
    let v = b.http(
        "GET",
        "/v1/packs/support/versions/1.1.0",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(v.body["yaml"], pack("1.1.0", 30));
    let records = history(&b);
    assert_eq!(records.len(), records_before + 1, "one admin-log record");
    let last = records.last().unwrap();
    assert_eq!(last["action"], "import");
    assert_eq!(last["environment"], "staging");
    assert_eq!(
        last["detail"]["manifest_sha256"],
        file_sha256(&manifest_text)
    );
    let verify = b.http("GET", "/v1/history/verify", Some(ADMIN_KEY), &[], None);
    assert_eq!(verify.body["ok"], true);

    let (code, out) = import(&b, ADMIN_KEY, &file, "staging", &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 added, 0 modified, 2 unchanged, 0 removed"),
        "{out}"
    );

    // A newer version upstream is a modification, shown with its semantic diff.
    a.push(&pack("1.2.0", 7));
    deploy(&a, "support", "1.2.0", "dev");
    let o = a.cli(Some(ADMIN_KEY), &["export", "-e", "dev", "--file", &file]);
    assert!(o.status.success(), "{}", text(&o));
    let (code, out) = import(&b, ADMIN_KEY, &file, "staging", &["--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("modified   support 1.1.0 → 1.2.0"), "{out}");
    assert!(out.contains("looser"), "{out}");
    assert!(out.contains("retention_days"), "the diff is printed: {out}");
    assert!(
        out.contains("0 added, 1 modified, 1 unchanged, 0 removed"),
        "{out}"
    );
}

fn replace_deactivates_a_pack_the_manifest_lacks_and_lists_it_first(backend: Backend) {
    let a = ControlPlane::start(backend, 200);
    a.push(PACK_V1);
    deploy(&a, "support", "1.0.0", "dev");
    let file = a.dir.path().join("dev.yaml").display().to_string();
    let o = a.cli(Some(ADMIN_KEY), &["export", "-e", "dev", "--file", &file]);
    assert!(o.status.success(), "{}", text(&o));

    let b = ControlPlane::start(backend, 200);
    b.push(&billing("1.0.0"));
    deploy(&b, "billing", "1.0.0", "dev");
    // Additive: billing stays.
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 added, 0 modified, 0 unchanged, 0 removed"),
        "{out}"
    );
    assert!(desired_hash(&b, "dev", "billing").is_some());

    // Deploy another support so that the replace both modifies and removes.
    b.push(&pack("0.9.0", 30));
    deploy(&b, "support", "0.9.0", "dev");
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &["--dry-run", "--replace"]);
    assert_eq!(code, 2, "{out}");
    let first = out.lines().find(|l| !l.starts_with("dry run")).unwrap();
    assert!(first.starts_with("removed    billing 1.0.0"), "{out}");
    assert!(
        out.contains("0 added, 1 modified, 0 unchanged, 1 removed"),
        "{out}"
    );
    assert!(desired_hash(&b, "dev", "billing").is_some(), "dry run");

    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &["--replace"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("removed    billing"),
        "{out}"
    );
    assert_eq!(desired_hash(&b, "dev", "billing"), None);
    assert_eq!(
        desired_hash(&b, "dev", "support"),
        desired_hash(&a, "dev", "support")
    );
    let gw = b.create_key("gateway", Some("dev"));
    let d = b.http(
        "GET",
        "/v1/gateways/desired?environment=dev&pack=billing",
        Some(&gw),
        &[],
        None,
    );
    assert_eq!(d.status, 404);
    assert_eq!(d.body["error"]["code"], "NO_DESIRED_VERSION");
    let hist = b.http(
        "GET",
        "/v1/deployments?environment=dev&pack=billing",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(hist.body["deployments"][0]["action"], "deactivate");
    // A rollback brings a deactivated pack back to the version it ran.
    let o = b.cli(
        Some(ADMIN_KEY),
        &["rollback", "billing", "-e", "dev", "--note", "undo"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(desired_hash(&b, "dev", "billing").is_some());
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &["--dry-run", "--replace"]);
    assert_eq!(code, 2, "{out}");
}

fn bad_manifests_and_missing_roles_fail_with_their_codes_and_write_nothing(backend: Backend) {
    let b = ControlPlane::start(backend, 200);
    let newer = b.file(
        "newer.yaml",
        "format_version: 2\nexported_at: x\norigin: y\nenvironment: dev\npacks: []\n",
    );
    for flags in [&[][..], &["--dry-run"][..]] {
        let (code, out) = import(&b, ADMIN_KEY, &newer, "dev", flags);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("UNSUPPORTED_MANIFEST_VERSION"), "{out}");
    }

    let entry = |yaml: String, hash: &str| {
        let loaded = policy_engine::load(&yaml).ok();
        ManifestPack {
            name: loaded
                .as_ref()
                .map_or("billing".to_owned(), |l| l.document.pack.name.clone()),
            version: "1.0.0".to_owned(),
            hash: loaded.map_or(hash.to_owned(), |l| l.hash.to_string()),
            yaml,
        }
    };
    let broken = billing("1.0.0").replace("[audit-logger, budget-enforcer]", "[no-such-policy]");
    let manifest = |packs| Manifest {
        format_version: 1,
        exported_at: "2025-01-01T00:00:00.000Z".to_owned(),
        origin: "http://elsewhere".to_owned(),
        environment: "dev".to_owned(),
        packs,
    };
    let with_broken = manifest(vec![entry(PACK_V1.to_owned(), ""), entry(broken, "0000")]);
    let file = b.file("broken.yaml", &with_broken.to_yaml().unwrap());
    for flags in [&[][..], &["--dry-run"][..]] {
        let (code, out) = import(&b, ADMIN_KEY, &file, "dev", flags);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("POLICY_COMPILE_ERROR"), "{out}");
        assert!(out.contains("pack `billing`"), "names the pack: {out}");
    }
    let versions = b.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(
        versions.status, 404,
        "all or nothing: support was not stored"
    );

    // support 1.0.0 exists here with other content: the whole import is refused.
    b.push(&PACK_V1.replace("retention_days: 30", "retention_days: 7"));
    let conflicting = manifest(vec![
        entry(billing("1.0.0"), ""),
        entry(PACK_V1.to_owned(), ""),
    ]);
    let file = b.file("conflict.yaml", &conflicting.to_yaml().unwrap());
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VERSION_CONFLICT"), "{out}");
    let versions = b.http(
        "GET",
        "/v1/packs/billing/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(
        versions.status, 404,
        "all or nothing: billing was not stored"
    );

    // Roles: a viewer may plan but not import; prod needs an admin.
    let good = b.file(
        "good.yaml",
        &manifest(vec![entry(billing("1.0.0"), "")])
            .to_yaml()
            .unwrap(),
    );
    let viewer = b.create_key("viewer", None);
    let (code, out) = import(&b, &viewer, &good, "dev", &["--dry-run"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = import(&b, &viewer, &good, "dev", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FORBIDDEN"), "{out}");
    let deployer = b.create_key("deployer", None);
    let (code, out) = import(&b, &deployer, &good, "prod", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FORBIDDEN"), "{out}");
    let refused = history(&b)
        .into_iter()
        .filter(|r| r["action"] == "import" && r["outcome"] == "refused")
        .count();
    assert_eq!(refused, 2, "refusals are recorded");
    let (code, out) = import(&b, &deployer, &good, "dev", &[]);
    assert_eq!(code, 0, "{out}");
}

fn an_import_whose_tests_fail_or_whose_admin_record_cannot_be_written_changes_nothing(
    backend: Backend,
) {
    let b = ControlPlane::start(backend, 200);
    let failing = format!(
        "{PACK_V1}tests:\n  - name: hello is blocked\n    input: hello\n    expect: block\n"
    );
    let loaded = policy_engine::load(&failing).unwrap();
    let manifest = |yaml: &str, hash: String| {
        Manifest {
            format_version: 1,
            exported_at: "2025-01-01T00:00:00.000Z".to_owned(),
            origin: "http://elsewhere".to_owned(),
            environment: "dev".to_owned(),
            packs: vec![ManifestPack {
                name: "support".to_owned(),
                version: "1.0.0".to_owned(),
                hash,
                yaml: yaml.to_owned(),
            }],
        }
        .to_yaml()
        .unwrap()
    };
    let file = b.file("failing.yaml", &manifest(&failing, loaded.hash.to_string()));
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("IMPORT_REFUSED") && out.contains("FAILED"),
        "{out}"
    );
    let versions = b.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(versions.status, 404);
    let last = history(&b).pop().unwrap();
    assert_eq!(
        (&last["action"], &last["outcome"]),
        (&"import".into(), &"refused".into())
    );

    let good = policy_engine::load(PACK_V1).unwrap();
    let file = b.file("good.yaml", &manifest(PACK_V1, good.hash.to_string()));
    b.db.break_admin_log();
    let (code, out) = import(&b, ADMIN_KEY, &file, "dev", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STORAGE_ERROR"), "{out}");
    let versions = b.http(
        "GET",
        "/v1/packs/support/versions",
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(versions.status, 404, "nothing applied without its record");
    assert_eq!(desired_hash(&b, "dev", "support"), None);
}

on_both_backends!(
    an_import_whose_tests_fail_or_whose_admin_record_cannot_be_written_changes_nothing,
    export_then_dry_run_then_import_gives_the_same_hashes_and_a_second_dry_run_is_clean,
    replace_deactivates_a_pack_the_manifest_lacks_and_lists_it_first,
    bad_manifests_and_missing_roles_fail_with_their_codes_and_write_nothing,
);
