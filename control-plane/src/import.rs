//! Export and import of manifests: `GET /v1/export?environment=E` and `POST /v1/import`.
//!
//! Import brings an environment to what a manifest says, additively by default: every pack
//! version not in the registry is stored, and every pack the environment does not run at the
//! manifest's hash is deployed. With `replace` the packs the environment runs but the manifest
//! lacks are deactivated too (see `pointers::DEACTIVATE`). Before anything is written every pack
//! is checked: it compiles (`POLICY_COMPILE_ERROR` naming the pack), its name, version and hash
//! are what the manifest says, a version that exists here has the same hash (`VERSION_CONFLICT`),
//! and its tests pass compiled for the target environment (the deploy gate, `IMPORT_REFUSED`).
//! The whole change, and its one admin-log record carrying the SHA-256 of the manifest file, is
//! one transaction: all or nothing, and refused if the record cannot be written.
//!
//! A dry run computes the same plan with the semantic diff of every modified pack and writes
//! nothing; it needs only a viewer key. A real import needs the target environment's deploy role.
//! Not done here: promotion evidence (an import is a deploy, gated like one, not a promotion) and
//! importing environments or keys (a manifest carries packs only).

use palisade_wire::error::ErrorCode;
use policy_engine::validate_text;
use serde_json::{json, Value};
use sqlx::AnyConnection;

use crate::adminlog::{self, Entry};
use crate::app::{App, Scope};
use crate::clock::rfc3339;
use crate::deploy::{all_passed, failed_names, tests_gate};
use crate::envs;
use crate::error::ApiError;
use crate::keys::Caller;
use crate::manifest::{file_sha256, Manifest, ManifestError, ManifestPack, FORMAT_VERSION};
use crate::pointers::{self, Pointer, DEACTIVATE};
use crate::registry::{self, compile_options, StoredVersion};

/// The manifest of what `environment` runs.
pub(crate) async fn export(
    app: &App,
    environment: &str,
    origin: String,
) -> Result<Manifest, ApiError> {
    let mut conn = app.db.read().await?;
    envs::require(&mut conn, environment).await?;
    let mut packs = Vec::new();
    for p in pointers::all_current(&mut conn, Some(environment)).await? {
        let v = registry::require(&mut conn, &p.pack, &p.version).await?;
        packs.push(ManifestPack {
            name: v.pack,
            version: v.version,
            hash: v.hash,
            yaml: v.yaml,
        });
    }
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        exported_at: rfc3339(app.now()),
        origin,
        environment: environment.to_owned(),
        packs,
    })
}

/// What an import asks for.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ImportRequest {
    /// The manifest file's text, exactly as read.
    pub manifest: String,
    pub environment: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub replace: bool,
    #[serde(default)]
    pub note: String,
}

/// What an import does (or would do) to the environment.
#[derive(Debug, Default)]
struct ImportPlan {
    /// Deployed now, not before: `(version to deploy, already in the registry)`.
    added: Vec<(StoredVersion, bool)>,
    /// Deployed at another hash before: `(running, to deploy, already in the registry)`.
    modified: Vec<(StoredVersion, StoredVersion, bool)>,
    unchanged: Vec<StoredVersion>,
    /// Running here, absent from the manifest, deactivated (with `replace` only).
    removed: Vec<Pointer>,
}

impl ImportPlan {
    fn changes(&self) -> usize {
        self.added.len() + self.modified.len() + self.removed.len()
    }

    fn to_deploy(&self) -> impl Iterator<Item = (&StoredVersion, bool)> {
        let added = self.added.iter().map(|(v, stored)| (v, *stored));
        added.chain(self.modified.iter().map(|(_, v, stored)| (v, *stored)))
    }

    /// The plan as the API shows it; `diffs` adds the semantic diff of every modified pack.
    fn to_json(&self, environment: &str, diffs: bool) -> Result<Value, ApiError> {
        let brief =
            |v: &StoredVersion| json!({ "pack": v.pack, "version": v.version, "hash": v.hash });
        let mut modified = Vec::new();
        for (old, new, _) in &self.modified {
            let mut m = json!({ "pack": new.pack,
                "from": { "version": old.version, "hash": old.hash },
                "to": { "version": new.version, "hash": new.hash } });
            if diffs {
                let d = registry::diff(old, Some(environment), new, Some(environment))?;
                m["diff"] = json!({ "overall": d["overall"], "summary": d["summary"], "changes": d["changes"], "text": d["text"] });
            }
            modified.push(m);
        }
        Ok(json!({
            "removed": self.removed.iter().map(|p| json!({ "pack": p.pack, "version": p.version, "hash": p.hash })).collect::<Vec<_>>(),
            "added": self.added.iter().map(|(v, _)| brief(v)).collect::<Vec<_>>(),
            "modified": modified,
            "unchanged": self.unchanged.iter().map(brief).collect::<Vec<_>>(),
            "counts": { "added": self.added.len(), "modified": self.modified.len(),
                        "unchanged": self.unchanged.len(), "removed": self.removed.len() },
            "changes": self.changes(),
        }))
    }
}

fn manifest_error(e: ManifestError) -> ApiError {
    match e {
        ManifestError::Unsupported { .. } => ApiError::Unprocessable {
            code: ErrorCode::UnsupportedManifestVersion,
            message: e.to_string(),
        },
        ManifestError::Invalid(_) => ApiError::BadRequest(e.to_string()),
    }
}

/// Compile every pack of the manifest and check it is what the manifest says it is.
fn check_packs(
    manifest: &Manifest,
    author: &str,
    note: &str,
    now: i64,
) -> Result<Vec<StoredVersion>, ApiError> {
    let mut out = Vec::new();
    for p in &manifest.packs {
        let (loaded, diags) = validate_text(&p.yaml, &compile_options());
        let loaded = match loaded {
            Some(l) if !diags.has_errors() => l,
            _ => {
                return Err(ApiError::CompileIn {
                    pack: p.name.clone(),
                    diagnostics: diags,
                })
            }
        };
        let (name, version, hash) = (
            &loaded.document.pack.name,
            &loaded.document.pack.version,
            loaded.hash.to_string(),
        );
        if *name != p.name || *version != p.version || hash != p.hash {
            return Err(ApiError::Unprocessable {
                code: ErrorCode::ManifestMismatch,
                message: format!(
                    "manifest entry {} {} (hash {}) holds a document that is {name} {version} (hash {hash})",
                    p.name, p.version, p.hash
                ),
            });
        }
        out.push(StoredVersion {
            pack: p.name.clone(),
            version: p.version.clone(),
            hash,
            yaml: p.yaml.clone(),
            author: author.to_owned(),
            note: note.to_owned(),
            created_at: now,
        });
    }
    Ok(out)
}

/// Compare the checked packs with the registry and the environment's pointers.
async fn plan(
    conn: &mut AnyConnection,
    environment: &str,
    packs: Vec<StoredVersion>,
    replace: bool,
) -> Result<ImportPlan, ApiError> {
    let mut plan = ImportPlan::default();
    for new in packs {
        let stored = match registry::get(conn, &new.pack, &new.version).await? {
            Some(existing) if existing.hash != new.hash => {
                return Err(ApiError::conflict(
                    ErrorCode::VersionConflict,
                    format!(
                        "{} {} exists here with another content (hash {}); versions are immutable",
                        new.pack, new.version, existing.hash
                    ),
                ))
            }
            found => found.is_some(),
        };
        match pointers::current(conn, environment, &new.pack).await? {
            None => plan.added.push((new, stored)),
            Some(p) if p.hash == new.hash => plan.unchanged.push(new),
            Some(p) => {
                let running = registry::require(conn, &p.pack, &p.version).await?;
                plan.modified.push((running, new, stored));
            }
        }
    }
    if replace {
        let named: Vec<String> = plan
            .to_deploy()
            .map(|(v, _)| v.pack.clone())
            .chain(plan.unchanged.iter().map(|v| v.pack.clone()))
            .collect();
        for p in pointers::all_current(conn, Some(environment)).await? {
            if !named.contains(&p.pack) {
                plan.removed.push(p);
            }
        }
    }
    Ok(plan)
}

/// `POST /v1/import`.
pub(crate) async fn import(
    app: &App,
    caller: &Caller,
    req: &ImportRequest,
) -> Result<Value, ApiError> {
    let env = envs::require(&mut *app.db.read().await?, &req.environment).await?;
    if !req.dry_run {
        app.require_role(
            caller,
            env.deploy_role,
            Scope::Environment(&env.name),
            "import",
            None,
        )
        .await?;
    }
    let manifest = Manifest::parse(&req.manifest).map_err(manifest_error)?;
    let sha256 = file_sha256(&req.manifest);
    crate::routes::check_note(&req.note)?;
    let note = if req.note.trim().is_empty() {
        format!("import of manifest {}", sha256.get(..12).unwrap_or(""))
    } else {
        req.note.clone()
    };
    let now = app.now();
    let packs = check_packs(&manifest, &caller.key_id, &note, now)?;
    if req.dry_run {
        let plan = plan(&mut *app.db.read().await?, &env.name, packs, req.replace).await?;
        let gates = gates(&plan, &env.name);
        if !all_passed(&gates) {
            return Err(refused(gates));
        }
        let mut out = plan.to_json(&env.name, true)?;
        out["dry_run"] = json!(true);
        out["manifest_sha256"] = json!(sha256);
        out["gates"] = json!(gates);
        return Ok(out);
    }
    // Planned again inside the write transaction, so what is applied is what was compared.
    let (guard, mut tx) = app.db.begin_write().await?;
    let plan = plan(&mut tx, &env.name, packs, req.replace).await?;
    let gates = gates(&plan, &env.name);
    if !all_passed(&gates) {
        drop(tx);
        drop(guard);
        let detail = json!({ "manifest_sha256": sha256, "gates": &gates });
        app.log_refusal(caller, "import", Some(&env.name), None, detail)
            .await?;
        return Err(refused(gates));
    }
    for (v, stored) in plan.to_deploy() {
        if !stored {
            registry::insert(&mut tx, v).await?;
        }
        let pointer = pointer(
            &env.name, &v.pack, &v.version, &v.hash, "import", caller, &note, now,
        );
        pointers::append(&mut tx, &pointer).await?;
    }
    for p in &plan.removed {
        let pointer = pointer(&env.name, &p.pack, "", "", DEACTIVATE, caller, &note, now);
        pointers::append(&mut tx, &pointer).await?;
    }
    let mut out = plan.to_json(&env.name, false)?;
    let detail = json!({
        "manifest_sha256": sha256, "format_version": manifest.format_version,
        "origin": manifest.origin, "exported_at": manifest.exported_at,
        "replace": req.replace, "note": note,
        "removed": out["removed"], "added": out["added"], "modified": out["modified"],
        "unchanged": out["counts"]["unchanged"],
    });
    let entry = Entry {
        actor: &caller.key_id,
        action: "import",
        outcome: "ok",
        environment: Some(&env.name),
        pack: None,
        detail,
    };
    let seq = adminlog::append(&mut tx, now, &entry).await?;
    tx.commit().await?;
    drop(guard);
    let touched = plan
        .to_deploy()
        .map(|(v, _)| v.pack.as_str())
        .chain(plan.removed.iter().map(|p| p.pack.as_str()));
    for pack in touched {
        app.watch.notify(&env.name, pack).await;
    }
    out["dry_run"] = json!(false);
    out["manifest_sha256"] = json!(sha256);
    out["admin_log_seq"] = json!(seq);
    Ok(out)
}

fn refused(gates: Vec<Value>) -> ApiError {
    ApiError::Refused {
        code: ErrorCode::ImportRefused,
        status: http::StatusCode::CONFLICT,
        message: format!("import refused by gate(s): {}", failed_names(&gates)),
        gates: json!(gates),
    }
}

/// The deploy gate (tests in the target environment) of every pack the import would deploy.
fn gates(plan: &ImportPlan, environment: &str) -> Vec<Value> {
    plan.to_deploy()
        .map(|(v, _)| {
            let mut g = tests_gate(v, environment);
            g["pack"] = json!(v.pack);
            g
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "one row's columns, named at the call site"
)]
fn pointer(
    environment: &str,
    pack: &str,
    version: &str,
    hash: &str,
    action: &str,
    caller: &Caller,
    note: &str,
    at: i64,
) -> Pointer {
    Pointer {
        environment: environment.to_owned(),
        pack: pack.to_owned(),
        seq: 0,
        version: version.to_owned(),
        hash: hash.to_owned(),
        action: action.to_owned(),
        actor: caller.key_id.clone(),
        note: note.to_owned(),
        at,
    }
}
