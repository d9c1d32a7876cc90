//! The console's pages (GET): each reads through the same service functions as the API and
//! renders one template. Errors become the error page with the API's code and message.

use palisade_wire::error::ErrorCode;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use policy_engine::pack::{BudgetScope, BudgetWindow};
use serde::Deserialize;
use serde_json::Value;

use super::view::{self, respond, text, DiagRow, GateRow, Shell};
use super::{render, Session};
use crate::adminlog;
use crate::api_events::{filter, EventQuery};
use crate::app::App;
use crate::envs;
use crate::error::ApiError;
use crate::escalations;
use crate::events;
use crate::extract::{Path, Query};
use crate::fleet;
use crate::pointers;
use crate::promote;
use crate::registry::{self, StoredVersion};

type AppState = State<Arc<App>>;

/// Every environment's name, in the registry's order.
async fn environment_names(conn: &mut sqlx::AnyConnection) -> Result<Vec<String>, sqlx::Error> {
    Ok(envs::list(conn)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

// ---------------------------------------------------------------- sign in

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(crate) struct SignInPage {
    pub shell: Shell,
    pub error: String,
}

pub(crate) async fn sign_in() -> Response {
    render(&SignInPage {
        shell: Shell::anonymous(),
        error: String::new(),
    })
}

// ---------------------------------------------------------------- environments

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    shell: Shell,
    cards: Vec<EnvCard>,
}

struct EnvCard {
    name: String,
    feeds_from: String,
    deploy_role: &'static str,
    soak: String,
    evidence: Vec<String>,
    packs: Vec<EnvPack>,
    gateways: Vec<(String, usize)>,
    open_escalations: i64,
    requests_today: i64,
    spend_today: String,
    chart: String,
}

struct EnvPack {
    pack: String,
    version: String,
    hash: String,
    since: String,
    budgets: Vec<Budget>,
    ran_before: Vec<String>,
}

/// One environment-wide budget limit with what was spent in its current window.
struct Budget {
    line: String,
    /// The burn over the window, for limits in dollars.
    chart: String,
}

pub(crate) async fn environments(State(app): AppState, session: Session) -> Response {
    let r = environments_page(&app, &session).await;
    respond(&session, r)
}

async fn environments_page(app: &App, session: &Session) -> Result<Response, ApiError> {
    let now = app.now();
    let (day, month) = view::day_and_month_start(now);
    let status = fleet::status(app, None).await?;
    let mut conn = app.db.read().await?;
    let envs = envs::list(&mut conn).await?;
    let current = pointers::all_current(&mut conn, None).await?;
    let queue = escalations::queue(&mut conn).await?;
    let mut cards = Vec::new();
    for e in envs {
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for entry in status["entries"].as_array().into_iter().flatten() {
            if entry["environment"] != e.name.as_str() {
                continue;
            }
            for g in entry["gateways"].as_array().into_iter().flatten() {
                *states.entry(text(&g["state"])).or_insert(0) += 1;
            }
        }
        let mut packs = Vec::new();
        for p in current.iter().filter(|p| p.environment == e.name) {
            let version = registry::require(&mut conn, &p.pack, &p.version).await?;
            let budgets = budget_lines(&mut conn, &version, &e.name, now, day, month).await?;
            let mut ran_before: Vec<String> = pointers::history(&mut conn, &e.name, &p.pack)
                .await?
                .into_iter()
                .filter(|h| !h.is_deactivation() && h.version != p.version)
                .map(|h| h.version)
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            ran_before.retain(|v| seen.insert(v.clone()));
            packs.push(EnvPack {
                pack: p.pack.clone(),
                version: p.version.clone(),
                hash: short(&p.hash),
                since: view::when(p.at),
                budgets,
                ran_before,
            });
        }
        let today = events::spend_per_hour(&mut conn, &e.name, day).await?;
        let requests_today: i64 = today.iter().map(|h| h.1).sum();
        let cost_today: f64 = today.iter().map(|h| h.2).sum();
        let hour_ago = now - 3_600_000;
        let series: Vec<(i64, String, i64)> = events::per_bucket(&mut conn, &e.name, hour_ago, now)
            .await?
            .into_iter()
            .map(|(b, v, _, n)| (b, v, n))
            .collect();
        let ev = e.evidence;
        let mut evidence = Vec::new();
        if let Some(n) = ev.min_requests {
            evidence.push(format!("at least {n} requests"));
        }
        for (name, v) in [
            ("error rate", ev.max_error_rate),
            ("escalation rate", ev.max_escalation_rate),
            ("block rate", ev.max_block_rate),
        ] {
            if let Some(v) = v {
                evidence.push(format!("{name} ≤ {:.2} %", v * 100.0));
            }
        }
        cards.push(EnvCard {
            feeds_from: e.feeds_from.clone().unwrap_or_default(),
            deploy_role: e.deploy_role.as_str(),
            soak: format_ms(e.soak_ms),
            evidence,
            packs,
            gateways: states.into_iter().collect(),
            open_escalations: queue.iter().filter(|q| q.0 == e.name).map(|q| q.2).sum(),
            requests_today,
            spend_today: format!("${cost_today:.2}"),
            chart: view::requests_chart(&series, hour_ago, now),
            name: e.name,
        });
    }
    Ok(render(&EnvironmentsPage {
        shell: Shell::new(session, "environments"),
        cards,
    }))
}

/// The pack's environment-wide budget limits in `env`, each with what the decision events say
/// was spent in its current window.
async fn budget_lines(
    conn: &mut sqlx::AnyConnection,
    version: &StoredVersion,
    env: &str,
    now: i64,
    day: i64,
    month: i64,
) -> Result<Vec<Budget>, ApiError> {
    let loaded = version.load()?;
    let Ok(doc) = loaded.resolve(Some(env)) else {
        return Ok(Vec::new());
    };
    let Some(budget) = &doc.policy.budget_enforcer else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for l in budget
        .limits
        .iter()
        // Rate limits (minute windows) are not spend: no burn chart for them.
        .filter(|l| l.scope == BudgetScope::Environment && l.window != BudgetWindow::Minute)
    {
        let start = match l.window {
            BudgetWindow::Minute => now,
            BudgetWindow::Daily => day,
            BudgetWindow::Monthly => month,
            BudgetWindow::Total => 0,
        };
        let hours = events::spend_per_hour(conn, env, start.min(now)).await?;
        let spent: f64 = hours.iter().map(|h| h.2).sum();
        let mut line = format!("{} window:", l.window.as_str());
        let mut chart = String::new();
        if let Some(usd) = l.usd {
            let pct = if usd > 0.0 { spent / usd * 100.0 } else { 0.0 };
            let _ = write!(line, " ${spent:.2} of ${usd:.2} ({pct:.1} %)");
            let cost: Vec<(i64, f64)> = hours.iter().map(|h| (h.0, h.2)).collect();
            chart = view::burn_chart(&cost, start, now, usd);
        }
        if let Some(t) = l.tokens {
            let _ = write!(line, " limit {t} tokens");
        }
        out.push(Budget { line, chart });
    }
    Ok(out)
}

fn format_ms(ms: i64) -> String {
    if ms == 0 {
        "none".to_owned()
    } else {
        humantime::format_duration(std::time::Duration::from_millis(ms.unsigned_abs())).to_string()
    }
}

// ---------------------------------------------------------------- promote dialog

#[derive(Template)]
#[template(path = "promote.html")]
struct PromotePage {
    shell: Shell,
    pack: String,
    from: String,
    to: String,
    version: String,
    gates: Vec<GateRow>,
    all_passed: bool,
}

#[derive(Deserialize)]
pub(crate) struct PackQuery {
    pack: Option<String>,
}

pub(crate) async fn promote(
    State(app): AppState,
    session: Session,
    Path(to): Path<String>,
    Query(q): Query<PackQuery>,
) -> Response {
    let r = promote_page(&app, &session, &to, q.pack.as_deref()).await;
    respond(&session, r)
}

async fn promote_page(
    app: &App,
    session: &Session,
    to: &str,
    pack: Option<&str>,
) -> Result<Response, ApiError> {
    let pack = pack.ok_or_else(|| ApiError::BadRequest("`pack` is required".to_owned()))?;
    let target = envs::require(&mut *app.db.read().await?, to).await?;
    let from = target.feeds_from.clone().ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{to} is fed from no environment; deploy a version to it instead"
        ))
    })?;
    let plan = promote::plan(app, &session.caller, pack, &from, to).await?;
    let gates: Vec<GateRow> = plan.gates.iter().map(GateRow::from_json).collect();
    Ok(render(&PromotePage {
        shell: Shell::new(session, "environments"),
        all_passed: gates.iter().all(|g| g.passed),
        gates,
        version: plan.version.map(|v| v.version).unwrap_or_default(),
        pack: pack.to_owned(),
        from,
        to: to.to_owned(),
    }))
}

// ---------------------------------------------------------------- gateways

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    shell: Shell,
    environment: String,
    environments: Vec<String>,
    rows: Vec<FleetPageRow>,
    all_synced: bool,
}

struct FleetPageRow {
    environment: String,
    pack: String,
    desired: String,
    id: String,
    state: String,
    version: String,
    hash: String,
    last_report: String,
    error: String,
    events_dropped: String,
    /// Audit records dropped under pressure or lost to failed writes.
    audit_missing: String,
}

#[derive(Deserialize)]
pub(crate) struct EnvQuery {
    environment: Option<String>,
}

pub(crate) async fn gateways(
    State(app): AppState,
    session: Session,
    Query(q): Query<EnvQuery>,
) -> Response {
    let r = gateways_page(&app, &session, q.environment).await;
    respond(&session, r)
}

async fn gateways_page(
    app: &App,
    session: &Session,
    environment: Option<String>,
) -> Result<Response, ApiError> {
    let status = fleet::status(app, environment.as_deref()).await?;
    let environments = environment_names(&mut *app.db.read().await?).await?;
    let mut rows = Vec::new();
    for entry in status["entries"].as_array().into_iter().flatten() {
        let desired = text(&entry["desired"]["version"]);
        let gws = entry["gateways"].as_array().cloned().unwrap_or_default();
        if gws.is_empty() {
            rows.push(FleetPageRow {
                environment: text(&entry["environment"]),
                pack: text(&entry["pack"]),
                desired: desired.clone(),
                id: String::new(),
                state: "NO GATEWAY".to_owned(),
                version: String::new(),
                hash: String::new(),
                last_report: String::new(),
                error: String::new(),
                events_dropped: String::new(),
                audit_missing: String::new(),
            });
        }
        for g in gws {
            let err = &g["last_attempt"]["error"];
            rows.push(FleetPageRow {
                environment: text(&entry["environment"]),
                pack: text(&entry["pack"]),
                desired: desired.clone(),
                id: text(&g["id"]),
                state: text(&g["state"]),
                version: text(&g["active"]["version"]),
                hash: short(&text(&g["active"]["hash"])),
                last_report: text(&g["last_report_at"]).replace('T', " "),
                error: if err.is_null() {
                    String::new()
                } else if let Some(m) = err["message"].as_str() {
                    m.to_owned()
                } else {
                    err.to_string()
                },
                events_dropped: text(&g["counters"]["events_dropped"]),
                audit_missing: text(&g["counters"]["audit_dropped"]),
            });
        }
    }
    Ok(render(&GatewaysPage {
        shell: Shell::new(session, "gateways"),
        environment: environment.unwrap_or_default(),
        environments,
        rows,
        all_synced: status["all_synced"] == Value::Bool(true),
    }))
}

// ---------------------------------------------------------------- packs

#[derive(Template)]
#[template(path = "packs.html")]
struct PacksPage {
    shell: Shell,
    q: String,
    rows: Vec<PackRow>,
}

struct PackRow {
    pack: String,
    versions: String,
    latest: String,
    latest_at: String,
    running: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
}

pub(crate) async fn packs(
    State(app): AppState,
    session: Session,
    Query(q): Query<SearchQuery>,
) -> Response {
    let r = packs_page(&app, &session, q.q.unwrap_or_default()).await;
    respond(&session, r)
}

async fn packs_page(app: &App, session: &Session, q: String) -> Result<Response, ApiError> {
    let mut conn = app.db.read().await?;
    let list = registry::packs(&mut conn).await?;
    let current = pointers::all_current(&mut conn, None).await?;
    let needle = q.to_lowercase();
    let rows = list
        .iter()
        .filter(|p| text(&p["pack"]).to_lowercase().contains(&needle))
        .map(|p| {
            let pack = text(&p["pack"]);
            PackRow {
                versions: text(&p["versions"]),
                latest: text(&p["latest"]["version"]),
                latest_at: text(&p["latest"]["created_at"]).replace('T', " "),
                running: current
                    .iter()
                    .filter(|c| c.pack == pack)
                    .map(|c| format!("{} runs {}", c.environment, c.version))
                    .collect(),
                pack,
            }
        })
        .collect();
    Ok(render(&PacksPage {
        shell: Shell::new(session, "packs"),
        q,
        rows,
    }))
}

#[derive(Template)]
#[template(path = "pack.html")]
struct PackPage {
    shell: Shell,
    pack: String,
    versions: Vec<VersionRow>,
    /// Versions older than the ones listed.
    older: i64,
    environments: Vec<String>,
}

/// The newest versions a pack page lists; older ones are reached by number.
const VERSIONS_SHOWN: i64 = 100;

struct VersionRow {
    version: String,
    hash: String,
    author: String,
    at: String,
    note: String,
    running: Vec<String>,
}

pub(crate) async fn pack(
    State(app): AppState,
    session: Session,
    Path(pack): Path<String>,
) -> Response {
    let r = pack_page(&app, &session, pack).await;
    respond(&session, r)
}

async fn pack_page(app: &App, session: &Session, pack: String) -> Result<Response, ApiError> {
    let mut conn = app.db.read().await?;
    let list = registry::newest(&mut conn, &pack, VERSIONS_SHOWN).await?;
    if list.is_empty() {
        return Err(ApiError::not_found(
            ErrorCode::UnknownPack,
            format!("no pack `{pack}`"),
        ));
    }
    let total = registry::count(&mut conn, &pack).await?;
    let current = pointers::all_current(&mut conn, None).await?;
    let environments = environment_names(&mut conn).await?;
    let versions: Vec<VersionRow> = list
        .iter()
        .map(|v| VersionRow {
            version: v.version.clone(),
            hash: short(&v.hash),
            author: v.author.clone(),
            at: view::when(v.created_at),
            note: v.note.clone(),
            running: current
                .iter()
                .filter(|c| c.pack == pack && c.version == v.version)
                .map(|c| c.environment.clone())
                .collect(),
        })
        .collect();
    Ok(render(&PackPage {
        shell: Shell::new(session, "packs"),
        pack,
        older: total - i64::try_from(versions.len()).unwrap_or(0),
        versions,
        environments,
    }))
}

// ---------------------------------------------------------------- compare

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    shell: Shell,
    pack: String,
    from: String,
    to: String,
    overall: String,
    counts: String,
    changes: Vec<ChangeRow>,
    lines: Vec<DiffLine>,
}

pub(crate) struct ChangeRow {
    pub path: String,
    pub old: String,
    pub new: String,
    pub effect: String,
}

pub(crate) struct DiffLine {
    pub tag: &'static str,
    pub text: String,
}

#[derive(Deserialize)]
pub(crate) struct CompareQuery {
    from: Option<String>,
    to: Option<String>,
    from_env: Option<String>,
    to_env: Option<String>,
}

pub(crate) async fn compare(
    State(app): AppState,
    session: Session,
    Path(pack): Path<String>,
    Query(q): Query<CompareQuery>,
) -> Response {
    let r = compare_page(&app, &session, pack, q).await;
    respond(&session, r)
}

async fn compare_page(
    app: &App,
    session: &Session,
    pack: String,
    q: CompareQuery,
) -> Result<Response, ApiError> {
    let mut conn = app.db.read().await?;
    let (old, old_env, new, new_env, from, to) = match (q.from_env, q.to_env) {
        (Some(a), Some(b)) => {
            let old = crate::routes::running(&mut conn, &a, &pack).await?;
            let new = crate::routes::running(&mut conn, &b, &pack).await?;
            let (from, to) = (
                format!("{} (in {a})", old.version),
                format!("{} (in {b})", new.version),
            );
            (old, Some(a), new, Some(b), from, to)
        }
        _ => {
            let from = q
                .from
                .ok_or_else(|| ApiError::BadRequest("`from` is required".to_owned()))?;
            let to =
                q.to.ok_or_else(|| ApiError::BadRequest("`to` is required".to_owned()))?;
            let old = registry::require(&mut conn, &pack, &from).await?;
            let new = registry::require(&mut conn, &pack, &to).await?;
            (old, None, new, None, from, to)
        }
    };
    drop(conn);
    let d = registry::diff(&old, old_env.as_deref(), &new, new_env.as_deref())?;
    let s = &d["summary"];
    Ok(render(&ComparePage {
        shell: Shell::new(session, "packs"),
        overall: text(&d["overall"]),
        counts: format!(
            "{} change(s): {} stricter, {} looser, {} neutral",
            s["changes"], s["stricter"], s["looser"], s["neutral"]
        ),
        changes: change_rows(&d),
        lines: yaml_diff(&old.yaml, &new.yaml),
        pack,
        from,
        to,
    }))
}

/// The semantic diff's changes as rows.
pub(crate) fn change_rows(d: &Value) -> Vec<ChangeRow> {
    d["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ChangeRow {
            path: text(&c["path"]),
            old: if c["old"].is_null() {
                "(absent)".to_owned()
            } else {
                c["old"].to_string()
            },
            new: if c["new"].is_null() {
                "(absent)".to_owned()
            } else {
                c["new"].to_string()
            },
            effect: text(&c["effect"]),
        })
        .collect()
}

/// The exact line diff of two YAML documents, with three lines of context around changes.
pub(crate) fn yaml_diff(old: &str, new: &str) -> Vec<DiffLine> {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push(DiffLine {
                tag: "gap",
                text: "…".to_owned(),
            });
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let tag = match change.tag() {
                    similar::ChangeTag::Delete => "del",
                    similar::ChangeTag::Insert => "ins",
                    similar::ChangeTag::Equal => "eq",
                };
                out.push(DiffLine {
                    tag,
                    text: change.value().trim_end_matches('\n').to_owned(),
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------- editor

#[derive(Template)]
#[template(path = "edit.html")]
pub(crate) struct EditPage {
    pub shell: Shell,
    /// Where the form posts: the pack's editor, or `/new-pack`.
    pub action: String,
    /// Empty for a new pack.
    pub pack: String,
    pub from: String,
    pub yaml: String,
    pub note: String,
    pub diagnostics: Vec<DiagRow>,
    pub checked: bool,
    pub tests: Vec<GateRow>,
}

/// One line of the checked YAML with the diagnostics that point at it.
pub(crate) struct ListingLine {
    pub n: usize,
    pub text: String,
    pub diagnostics: Vec<String>,
}

impl EditPage {
    /// The YAML's lines that carry a diagnostic, each with two lines of context, so every
    /// diagnostic is shown at its line.
    pub(crate) fn listing(&self) -> Vec<ListingLine> {
        let marked: Vec<usize> = self.diagnostics.iter().map(|d| d.line).collect();
        self.yaml
            .lines()
            .enumerate()
            .map(|(i, t)| (i + 1, t))
            .filter(|(n, _)| marked.iter().any(|m| m.abs_diff(*n) <= 2))
            .map(|(n, t)| ListingLine {
                n,
                text: t.to_owned(),
                diagnostics: self
                    .diagnostics
                    .iter()
                    .filter(|d| d.line == n)
                    .map(|d| format!("{} {}", d.code, d.message))
                    .collect(),
            })
            .collect()
    }
}

#[derive(Deserialize)]
pub(crate) struct FromQuery {
    from: Option<String>,
}

pub(crate) async fn edit(
    State(app): AppState,
    session: Session,
    Path(pack): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    let r = edit_page(&app, &session, pack, q.from).await;
    respond(&session, r)
}

async fn edit_page(
    app: &App,
    session: &Session,
    pack: String,
    from: Option<String>,
) -> Result<Response, ApiError> {
    let mut conn = app.db.read().await?;
    let v = match from {
        Some(f) => registry::require(&mut conn, &pack, &f).await?,
        None => registry::newest(&mut conn, &pack, 1)
            .await?
            .pop()
            .ok_or_else(|| {
                ApiError::not_found(ErrorCode::UnknownPack, format!("no pack `{pack}`"))
            })?,
    };
    Ok(render(&EditPage {
        shell: Shell::new(session, "packs"),
        action: format!("/packs/{pack}/edit"),
        pack,
        from: v.version,
        yaml: v.yaml,
        note: String::new(),
        diagnostics: Vec::new(),
        checked: false,
        tests: Vec::new(),
    }))
}

/// The first version of a new pack: the seed form, valid as it stands.
const NEW_PACK: &str = "pack:\n  name: my-pack\n  version: 0.1.0\n  enabled: true\n  description: What this pack is for\npolicies:\n  chain: [audit-logger, pii-detector, budget-enforcer]\npolicy:\n  pii-detector:\n    action: redact         # redact | block | log | escalate\n  budget-enforcer: {}\ntests:\n  - name: an e-mail is redacted\n    input: write to jane@example.com\n    expect: redact\n";

pub(crate) async fn new_pack(session: Session) -> Response {
    render(&EditPage {
        shell: Shell::new(&session, "packs"),
        action: "/new-pack".to_owned(),
        pack: String::new(),
        from: String::new(),
        yaml: NEW_PACK.to_owned(),
        note: String::new(),
        diagnostics: Vec::new(),
        checked: false,
        tests: Vec::new(),
    })
}

// ---------------------------------------------------------------- deploy review

#[derive(Template)]
#[template(path = "deploy.html")]
struct DeployPage {
    shell: Shell,
    pack: String,
    version: String,
    environment: String,
    environments: Vec<String>,
    current: String,
    overall: String,
    changes: Vec<ChangeRow>,
    tests: GateRow,
}

#[derive(Deserialize)]
pub(crate) struct DeployQuery {
    version: Option<String>,
    environment: Option<String>,
}

pub(crate) async fn deploy(
    State(app): AppState,
    session: Session,
    Path(pack): Path<String>,
    Query(q): Query<DeployQuery>,
) -> Response {
    let r = deploy_page(&app, &session, pack, q).await;
    respond(&session, r)
}

async fn deploy_page(
    app: &App,
    session: &Session,
    pack: String,
    q: DeployQuery,
) -> Result<Response, ApiError> {
    let version = q
        .version
        .ok_or_else(|| ApiError::BadRequest("`version` is required".to_owned()))?;
    let mut conn = app.db.read().await?;
    let environments: Vec<String> = environment_names(&mut conn).await?;
    let environment = q
        .environment
        .or_else(|| environments.first().cloned())
        .unwrap_or_default();
    envs::require(&mut conn, &environment).await?;
    let new = registry::require(&mut conn, &pack, &version).await?;
    let current = match pointers::current(&mut conn, &environment, &pack).await? {
        Some(p) => Some(registry::require(&mut conn, &pack, &p.version).await?),
        None => None,
    };
    drop(conn);
    let (current_name, overall, changes) = match &current {
        Some(old) => {
            let env = Some(environment.as_str());
            let d = registry::diff(old, env, &new, env)?;
            (old.version.clone(), text(&d["overall"]), change_rows(&d))
        }
        None => (String::new(), "first deploy".to_owned(), Vec::new()),
    };
    let tests = GateRow::from_json(&crate::deploy::tests_gate(&new, &environment));
    Ok(render(&DeployPage {
        shell: Shell::new(session, "packs"),
        pack,
        version,
        environment,
        environments,
        current: current_name,
        overall,
        changes,
        tests,
    }))
}

// ---------------------------------------------------------------- events

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    shell: Shell,
    q: EventForm,
    environments: Vec<String>,
    outcomes: Vec<&'static str>,
    rows: Vec<EventRow>,
    next_cursor: String,
    summary: Vec<SummaryRow>,
    chart: String,
}

#[derive(Default)]
struct EventForm {
    environment: String,
    version: String,
    outcome: String,
    entity: String,
    caller: String,
    model: String,
    since: String,
}

struct EventRow {
    at: String,
    environment: String,
    version: String,
    outcome: String,
    route: String,
    model: String,
    caller: String,
    status: String,
    latency_ms: String,
    pii: String,
}

struct SummaryRow {
    version: String,
    hash: String,
    requests: i64,
    outcomes: String,
    error: String,
    escalation: String,
    block: String,
    findings: String,
}

pub(crate) async fn events(
    State(app): AppState,
    session: Session,
    Query(q): Query<EventQuery>,
) -> Response {
    let r = events_page(&app, &session, q).await;
    respond(&session, r)
}

async fn events_page(
    app: &App,
    session: &Session,
    mut q: EventQuery,
) -> Result<Response, ApiError> {
    let now = app.now();
    let mut conn = app.db.read().await?;
    let environments: Vec<String> = environment_names(&mut conn).await?;
    if q.environment.is_none() {
        q.environment = session
            .caller
            .environment
            .clone()
            .or_else(|| environments.first().cloned());
    }
    if q.since.is_none() {
        q.since = Some("1h".to_owned());
    }
    let form = EventForm {
        environment: q.environment.clone().unwrap_or_default(),
        version: q.version.clone().unwrap_or_default(),
        outcome: q.outcome.clone().unwrap_or_default(),
        entity: q.entity.clone().unwrap_or_default(),
        caller: q.caller.clone().unwrap_or_default(),
        model: q.model.clone().unwrap_or_default(),
        since: q.since.clone().unwrap_or_default(),
    };
    let cursor = q
        .cursor
        .take()
        .as_deref()
        .map(events::Cursor::decode)
        .transpose()?;
    q.limit = None;
    let f = filter(q, &session.caller, now)?;
    let (list, next) = events::list(&mut conn, &f, cursor.as_ref(), 100).await?;
    let rows = list
        .iter()
        .map(|e| EventRow {
            at: text(&e["at"]).replace('T', " "),
            environment: text(&e["environment"]),
            version: text(&e["version"]),
            outcome: text(&e["outcome"]),
            route: text(&e["route"]),
            model: text(&e["model_used"]),
            caller: text(&e["caller"]),
            status: text(&e["status"]),
            latency_ms: format!("{:.1}", e["latency_us"].as_f64().unwrap_or(0.0) / 1000.0),
            pii: pii_text(&e["pii"]),
        })
        .collect();
    let mut summary = Vec::new();
    let mut chart = String::new();
    if let Some(env) = f.environment.as_deref() {
        let since = f.since_ms.unwrap_or(now - 3_600_000);
        let until = f.until_ms.unwrap_or(now + 1);
        let counts = events::summary(&mut conn, env, f.pack.as_deref(), None, since, until).await?;
        summary = counts.iter().map(summary_row).collect();
        let series: Vec<(i64, String, i64)> = events::per_bucket(&mut conn, env, since, until)
            .await?
            .into_iter()
            .map(|(b, v, _, n)| (b, v, n))
            .collect();
        chart = view::requests_chart(&series, since, until);
    }
    Ok(render(&EventsPage {
        shell: Shell::new(session, "events"),
        q: form,
        environments,
        outcomes: events::outcome_names(),
        rows,
        next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
        summary,
        chart,
    }))
}

fn pii_text(pii: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(sides) = pii.as_object() {
        for (side, entities) in sides {
            if let Some(m) = entities.as_object() {
                for (entity, n) in m {
                    parts.push(format!("{side}:{entity}×{n}"));
                }
            }
        }
    }
    parts.join(" ")
}

fn summary_row(c: &events::VersionCounts) -> SummaryRow {
    let pct = |r: f64| format!("{:.2} %", r * 100.0);
    SummaryRow {
        version: c.version.clone(),
        hash: short(&c.hash),
        requests: c.requests,
        outcomes: c
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        error: pct(c.error_rate()),
        escalation: pct(c.escalation_rate()),
        block: pct(c.block_rate()),
        findings: c
            .findings
            .iter()
            .flat_map(|(side, m)| m.iter().map(move |(e, n)| format!("{side}:{e} {n}")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

// ---------------------------------------------------------------- escalations

#[derive(Template)]
#[template(path = "escalations.html")]
struct EscalationsPage {
    shell: Shell,
    state: String,
    rows: Vec<EscalationRow>,
}

struct EscalationRow {
    id: String,
    environment: String,
    version: String,
    opened: String,
    state: String,
    assignee: String,
    resolution: String,
    note: String,
}

#[derive(Deserialize)]
pub(crate) struct EscalationsPageQuery {
    environment: Option<String>,
    state: Option<String>,
}

pub(crate) async fn escalations(
    State(app): AppState,
    session: Session,
    Query(q): Query<EscalationsPageQuery>,
) -> Response {
    let r = escalations_page(&app, &session, q).await;
    respond(&session, r)
}

async fn escalations_page(
    app: &App,
    session: &Session,
    q: EscalationsPageQuery,
) -> Result<Response, ApiError> {
    let env = crate::api_events::scoped_environment(&session.caller, q.environment.as_deref())?;
    let list = escalations::list(&mut *app.db.read().await?, env, q.state.as_deref(), 500).await?;
    let rows = list
        .iter()
        .map(|e| EscalationRow {
            id: text(&e["id"]),
            environment: text(&e["environment"]),
            version: text(&e["version"]),
            opened: text(&e["opened_at"]).replace('T', " "),
            state: text(&e["state"]),
            assignee: text(&e["assignee"]),
            resolution: text(&e["resolution"]),
            note: text(&e["note"]),
        })
        .collect();
    Ok(render(&EscalationsPage {
        shell: Shell::new(session, "escalations"),
        state: q.state.unwrap_or_default(),
        rows,
    }))
}

// ---------------------------------------------------------------- history

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    shell: Shell,
    environment: String,
    pack: String,
    chain_ok: bool,
    chain: String,
    rows: Vec<HistoryRow>,
}

struct HistoryRow {
    seq: String,
    at: String,
    actor: String,
    action: String,
    outcome: String,
    environment: String,
    pack: String,
    detail: String,
}

#[derive(Deserialize)]
pub(crate) struct HistoryPageQuery {
    environment: Option<String>,
    pack: Option<String>,
    /// `now`: verify the whole chain for this load instead of showing the last check.
    verify: Option<String>,
}

pub(crate) async fn history(
    State(app): AppState,
    session: Session,
    Query(q): Query<HistoryPageQuery>,
) -> Response {
    let r = history_page(&app, &session, q).await;
    respond(&session, r)
}

async fn history_page(
    app: &App,
    session: &Session,
    q: HistoryPageQuery,
) -> Result<Response, ApiError> {
    let max_age = if q.verify.as_deref() == Some("now") {
        0
    } else {
        crate::app::CHAIN_CHECK_MAX_AGE_MS
    };
    let (report, checked_at) = app.chain_report(max_age).await?;
    let mut conn = app.db.read().await?;
    let mut records =
        adminlog::list(&mut conn, q.environment.as_deref(), q.pack.as_deref(), 500).await?;
    records.reverse();
    let rows = records
        .iter()
        .map(|r| HistoryRow {
            seq: text(&r["seq"]),
            at: text(&r["at"]).replace('T', " "),
            actor: text(&r["actor"]),
            action: text(&r["action"]),
            outcome: text(&r["outcome"]),
            environment: text(&r["environment"]),
            pack: text(&r["pack"]),
            detail: brief(&r["detail"]),
        })
        .collect();
    let chain = if report.ok {
        format!(
            "chain verified: {} records, head {}, checked {}",
            report.records,
            short(&report.head),
            view::when(checked_at)
        )
    } else {
        format!(
            "chain BROKEN at record {}: {}",
            report.broken_at.unwrap_or(0),
            report.problem.clone().unwrap_or_default()
        )
    };
    Ok(render(&HistoryPage {
        shell: Shell::new(session, "history"),
        environment: q.environment.unwrap_or_default(),
        pack: q.pack.unwrap_or_default(),
        chain_ok: report.ok,
        chain,
        rows,
    }))
}

/// A record's detail in one line: its note and version when it has them, else compact JSON.
fn brief(detail: &Value) -> String {
    let mut parts = Vec::new();
    for k in ["version", "from", "note", "reason", "id", "role"] {
        if let Some(v) = detail.get(k).filter(|v| !v.is_null()) {
            parts.push(format!("{k}: {}", text(v)));
        }
    }
    if parts.is_empty() {
        let s = detail.to_string();
        s.chars().take(160).collect()
    } else {
        parts.join(" · ")
    }
}

// ---------------------------------------------------------------- keys

#[derive(Template)]
#[template(path = "keys.html")]
pub(crate) struct KeysPage {
    pub shell: Shell,
    pub rows: Vec<KeyRow>,
    pub environments: Vec<String>,
    /// A key just created: its id and secret, shown this once.
    pub created: Option<(String, String)>,
}

pub(crate) struct KeyRow {
    pub id: String,
    pub role: String,
    pub environment: String,
    pub created_by: String,
    pub created_at: String,
    pub revoked: bool,
}

pub(crate) async fn keys(State(app): AppState, session: Session) -> Response {
    let r = keys_page(&app, &session, None).await;
    respond(&session, r)
}

/// The keys page, with a just-created key's secret when there is one.
pub(crate) async fn keys_page(
    app: &App,
    session: &Session,
    created: Option<(String, String)>,
) -> Result<Response, ApiError> {
    let rows = crate::api_admin::list_keys_for(app, &session.caller)
        .await?
        .iter()
        .map(|k| KeyRow {
            id: text(&k["id"]),
            role: text(&k["role"]),
            environment: text(&k["environment"]),
            created_by: text(&k["created_by"]),
            created_at: text(&k["created_at"]).replace('T', " "),
            revoked: !k["revoked_at"].is_null(),
        })
        .collect();
    let environments = environment_names(&mut *app.db.read().await?).await?;
    Ok(render(&KeysPage {
        shell: Shell::new(session, "keys"),
        rows,
        environments,
        created,
    }))
}
