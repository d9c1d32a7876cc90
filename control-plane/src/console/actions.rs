//! The console's changes (POST): each takes a [`Change`] (session + CSRF-checked form), calls the
//! same service function as the API — which checks the role and writes the admin log — and
//! answers with a redirect to the page that shows the result (303, so a reload does not repeat
//! it), or the error page with the API's code, message, gates and diagnostics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::Form;
use http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, EditPage, SignInPage};
use super::view::{self, respond, text, DiagRow, GateRow, Shell};
use super::{close_session, open_session, over_tls, render_status, Change, Session};
use crate::api_admin::{create_key, revoke_key, NewKeyBody};
use crate::app::App;
use crate::deploy;
use crate::envs;
use crate::error::ApiError;
use crate::escalations::{self, Step};
use crate::extract::{Json, Path};
use crate::keys::{self, Role};
use crate::promote;
use crate::registry;
use crate::routes::check_note;

type AppState = State<Arc<App>>;

fn see(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Percent-encode one path segment or query value.
fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- sign in / out

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    key: String,
}

pub(crate) async fn sign_in(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let refused = |status: StatusCode, message: &str| {
        render_status(
            status,
            &SignInPage {
                shell: Shell::anonymous(),
                error: message.to_owned(),
            },
        )
    };
    let bearer = format!("Bearer {}", f.key.trim());
    let caller = {
        let conn = app.db.read().await;
        match conn {
            Ok(mut c) => keys::authenticate(&mut c, Some(&bearer)).await,
            Err(e) => Err(ApiError::Storage(e)),
        }
    };
    let caller = match caller {
        Ok(c) if c.role != Role::Gateway => c,
        Ok(_) => {
            return refused(
                StatusCode::FORBIDDEN,
                "gateway keys cannot sign in to the console; use a service key",
            )
        }
        Err(ApiError::InvalidKey) => {
            return refused(StatusCode::UNAUTHORIZED, "that key is not an active key")
        }
        Err(e) => return view::error_page(None, &e),
    };
    match open_session(&app, &caller, over_tls(&headers)).await {
        Ok(cookie) => {
            let mut r = see("/environments");
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => view::error_page(None, &e),
    }
}

#[derive(Deserialize)]
pub(crate) struct Nothing {}

pub(crate) async fn sign_out(
    State(app): AppState,
    headers: HeaderMap,
    c: Change<Nothing>,
) -> Response {
    match close_session(&app, &headers).await {
        Ok(cookie) => {
            let mut r = see("/sign-in");
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => view::error_page(Some(&c.session), &e),
    }
}

// ---------------------------------------------------------------- promote, rollback, deploy

#[derive(Deserialize)]
pub(crate) struct PromoteForm {
    pack: String,
    #[serde(default)]
    note: String,
}

pub(crate) async fn promote(
    State(app): AppState,
    Path(to): Path<String>,
    c: Change<PromoteForm>,
) -> Response {
    let r = async {
        check_note(&c.form.note)?;
        let target = envs::require(&mut *app.db.read().await?, &to).await?;
        let from = target
            .feeds_from
            .ok_or_else(|| ApiError::BadRequest(format!("{to} is fed from no environment")))?;
        let caller = &c.session.caller;
        promote::promote(&app, caller, &c.form.pack, &from, &to, &c.form.note).await?;
        Ok(see(&format!("/gateways?environment={}", enc(&to))))
    }
    .await;
    respond(&c.session, r)
}

#[derive(Deserialize)]
pub(crate) struct RollbackForm {
    pack: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    note: String,
}

pub(crate) async fn rollback(
    State(app): AppState,
    Path(env): Path<String>,
    c: Change<RollbackForm>,
) -> Response {
    let r = async {
        check_note(&c.form.note)?;
        let f = &c.form;
        let to = Some(f.to.as_str()).filter(|t| !t.is_empty());
        deploy::rollback(&app, &c.session.caller, &f.pack, &env, to, &f.note).await?;
        Ok(see(&format!("/gateways?environment={}", enc(&env))))
    }
    .await;
    respond(&c.session, r)
}

#[derive(Deserialize)]
pub(crate) struct DeployForm {
    version: String,
    environment: String,
    #[serde(default)]
    note: String,
}

pub(crate) async fn deploy(
    State(app): AppState,
    Path(pack): Path<String>,
    c: Change<DeployForm>,
) -> Response {
    let r = async {
        let f = &c.form;
        check_note(&f.note)?;
        let caller = &c.session.caller;
        deploy::deploy(&app, caller, &pack, &f.version, &f.environment, &f.note).await?;
        Ok(see(&format!(
            "/gateways?environment={}",
            enc(&f.environment)
        )))
    }
    .await;
    respond(&c.session, r)
}

// ---------------------------------------------------------------- editor

#[derive(Deserialize)]
pub(crate) struct EditForm {
    #[serde(default)]
    yaml: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    action: String,
}

/// Validate `yaml` as `palisade validate` does, and run the pack's tests in every environment.
async fn check(app: &App, yaml: &str) -> Result<(Vec<DiagRow>, Vec<GateRow>), ApiError> {
    let (loaded, diags) = policy_engine::validate_text(yaml, &registry::compile_options());
    let rows: Vec<DiagRow> = diags
        .0
        .iter()
        .map(|d| DiagRow::from_json(&json!(d)))
        .collect();
    let mut tests = Vec::new();
    if let (Some(loaded), false) = (loaded, diags.has_errors()) {
        for e in envs::list(&mut *app.db.read().await?).await? {
            let mut row = GateRow::from_json(&deploy::pack_tests_gate(&loaded, &e.name));
            row.name = format!("tests in {}", e.name);
            tests.push(row);
        }
    }
    Ok((rows, tests))
}

pub(crate) async fn edit(
    State(app): AppState,
    Path(pack): Path<String>,
    c: Change<EditForm>,
) -> Response {
    let action = format!("/packs/{pack}/edit");
    save_or_check(&app, action, pack, c).await
}

/// `POST /new-pack`: the editor of a pack that has no version yet.
pub(crate) async fn new_pack(State(app): AppState, c: Change<EditForm>) -> Response {
    save_or_check(&app, "/new-pack".to_owned(), String::new(), c).await
}

/// Check the edited YAML (and show the editor again), or save it as a new version and go to
/// its deploy review.
async fn save_or_check(app: &App, action: String, pack: String, c: Change<EditForm>) -> Response {
    let r = async {
        let mut f = c.form;
        // Browsers submit a textarea's lines with CRLF; the pack is stored as written, with LF.
        f.yaml = f.yaml.replace("\r\n", "\n");
        let page = |diagnostics, tests, checked| EditPage {
            shell: Shell::new(&c.session, "packs"),
            action: action.clone(),
            pack: pack.clone(),
            from: f.from.clone(),
            yaml: f.yaml.clone(),
            note: f.note.clone(),
            diagnostics,
            checked,
            tests,
        };
        if f.action != "save" {
            let (d, t) = check(app, &f.yaml).await?;
            return Ok(super::render(&page(d, t, true)));
        }
        check_note(&f.note)?;
        match registry::push(app, &c.session.caller, &f.yaml, &f.note).await {
            Ok(out) => Ok(see(&format!(
                "/packs/{}/deploy?version={}",
                enc(&text(&out["pack"])),
                enc(&text(&out["version"]))
            ))),
            Err(ApiError::Compile(d)) => {
                let rows = d.0.iter().map(|x| DiagRow::from_json(&json!(x))).collect();
                Ok(render_status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &page(rows, Vec::new(), true),
                ))
            }
            Err(e) => Err(e),
        }
    }
    .await;
    respond(&c.session, r)
}

#[derive(Deserialize)]
pub(crate) struct ValidateBody {
    yaml: String,
}

/// `POST /console/validate`: the editor's check while typing (changes nothing; signed-in
/// browsers only).
pub(crate) async fn validate(
    State(app): AppState,
    _: Session,
    Json(body): Json<ValidateBody>,
) -> Result<Response, ApiError> {
    let (diagnostics, tests) = check(&app, &body.yaml).await?;
    crate::error::ok(&json!({ "diagnostics": diagnostics, "tests": tests }))
}

// ---------------------------------------------------------------- escalations

#[derive(Deserialize)]
pub(crate) struct AckForm {
    #[serde(default)]
    assignee: String,
}

pub(crate) async fn ack(
    State(app): AppState,
    Path(id): Path<String>,
    c: Change<AckForm>,
) -> Response {
    let r = async {
        let assignee = Some(c.form.assignee.clone()).filter(|a| !a.trim().is_empty());
        escalations::act(&app, &c.session.caller, &id, Step::Acknowledge { assignee }).await?;
        Ok(see("/escalations"))
    }
    .await;
    respond(&c.session, r)
}

#[derive(Deserialize)]
pub(crate) struct ResolveForm {
    #[serde(default)]
    resolution: String,
    #[serde(default)]
    note: String,
}

pub(crate) async fn resolve(
    State(app): AppState,
    Path(id): Path<String>,
    c: Change<ResolveForm>,
) -> Response {
    let r = async {
        let step = Step::Resolve {
            resolution: c.form.resolution.clone(),
            note: c.form.note.clone(),
        };
        escalations::act(&app, &c.session.caller, &id, step).await?;
        Ok(see("/escalations"))
    }
    .await;
    respond(&c.session, r)
}

// ---------------------------------------------------------------- keys

#[derive(Deserialize)]
pub(crate) struct NewKeyForm {
    role: String,
    #[serde(default)]
    environment: String,
}

pub(crate) async fn new_key(State(app): AppState, c: Change<NewKeyForm>) -> Response {
    let r = async {
        let body = NewKeyBody {
            role: c.form.role.clone(),
            environment: Some(c.form.environment.clone()).filter(|e| !e.is_empty()),
        };
        let out = create_key(&app, &c.session.caller, body).await?;
        let created = Some((text(&out["id"]), text(&out["key"])));
        pages::keys_page(&app, &c.session, created).await
    }
    .await;
    respond(&c.session, r)
}

pub(crate) async fn revoke_key_form(
    State(app): AppState,
    Path(id): Path<String>,
    c: Change<Nothing>,
) -> Response {
    let r = async {
        revoke_key(&app, &c.session.caller, &id).await?;
        Ok(see("/keys"))
    }
    .await;
    respond(&c.session, r)
}
