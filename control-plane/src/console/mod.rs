//! The operator console: server-rendered pages at `/` of the control plane, over the same
//! service functions as the API, so a page can do nothing a key could not do through the API.
//!
//! - **Sessions.** Signing in with a service key creates a session row (the token's SHA-256, the
//!   key id, a CSRF token, an expiry of [`SESSION_TTL_MS`]); the browser holds the token in an
//!   `HttpOnly; SameSite=Strict` cookie, `Secure` when the request arrived over TLS (a proxy's
//!   `X-Forwarded-Proto: https`). Every request re-reads the key, so revoking a key ends its
//!   sessions; signing out deletes the row.
//! - **Changes** take the [`Change`] extractor: a POSTed form whose `csrf` field must equal the
//!   session's token (compared in constant time), so no handler can forget the check. Roles are
//!   enforced by the service functions exactly as in the API; pages only disable the buttons a
//!   role cannot use.
//! - **Assets** (one stylesheet, one small script) are compiled into the binary. Every page reads
//!   without JavaScript; the script adds validation while typing and the promote dialog's focus.

mod actions;
mod pages;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::app::App;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::keys::{self, Caller, Role};

/// How long a session lasts from sign-in.
pub(crate) const SESSION_TTL_MS: i64 = 8 * 3_600_000;
const COOKIE: &str = "palisade_session";

/// The console's routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/environments") }))
        .route("/sign-in", get(pages::sign_in).post(actions::sign_in))
        .route("/sign-out", post(actions::sign_out))
        .route("/environments", get(pages::environments))
        .route(
            "/environments/{env}/promote",
            get(pages::promote).post(actions::promote),
        )
        .route("/environments/{env}/rollback", post(actions::rollback))
        .route("/gateways", get(pages::gateways))
        .route("/packs", get(pages::packs))
        .route("/packs/{pack}", get(pages::pack))
        .route("/new-pack", get(pages::new_pack).post(actions::new_pack))
        .route("/packs/{pack}/compare", get(pages::compare))
        .route("/packs/{pack}/edit", get(pages::edit).post(actions::edit))
        .route(
            "/packs/{pack}/deploy",
            get(pages::deploy).post(actions::deploy),
        )
        .route("/console/validate", post(actions::validate))
        .route("/events", get(pages::events))
        .route("/escalations", get(pages::escalations))
        .route("/escalations/{id}/ack", post(actions::ack))
        .route("/escalations/{id}/resolve", post(actions::resolve))
        .route("/history", get(pages::history))
        .route("/keys", get(pages::keys).post(actions::new_key))
        .route("/keys/{id}/revoke", post(actions::revoke_key_form))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
}

/// What a browser may do with the console's pages: run only the console's own script and style,
/// never be framed, post forms only here, and keep pages out of caches (assets set their own).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "public, max-age=3600"),
    ];
    (headers, body).into_response()
}

/// A signed-in browser: the key it stands for and its CSRF token.
#[derive(Debug)]
pub(crate) struct Session {
    pub caller: Caller,
    pub csrf: String,
}

impl Session {
    /// Whether the signed-in key may change policy at all (deployer or admin).
    pub(crate) fn can_change(&self) -> bool {
        self.caller.role.at_least(Role::Deployer)
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.caller.role == Role::Admin && self.caller.environment.is_none()
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Where an unauthenticated browser is sent.
pub(crate) fn to_sign_in() -> Response {
    Redirect::to("/sign-in").into_response()
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(to_sign_in());
        };
        match load_session(app, token).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(to_sign_in()),
            Err(e) => Err(e.into_response()),
        }
    }
}

async fn load_session(app: &App, token: &str) -> Result<Option<Session>, ApiError> {
    let mut conn = app.db.read().await?;
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT key_id, csrf, expires_at FROM console_sessions WHERE token_hash = $1",
    )
    .bind(keys::token_hash(token))
    .fetch_optional(&mut *conn)
    .await?;
    let Some((key_id, csrf, expires_at)) = row else {
        return Ok(None);
    };
    if expires_at <= app.now() {
        return Ok(None);
    }
    let caller = keys::caller_by_id(&mut conn, &key_id).await?;
    Ok(caller
        .filter(|c| c.role != Role::Gateway)
        .map(|caller| Session { caller, csrf }))
}

/// Start a session for `caller`; the `Set-Cookie` value to send.
pub(crate) async fn open_session(
    app: &App,
    caller: &Caller,
    secure: bool,
) -> Result<HeaderValue, ApiError> {
    let (token, hash) = keys::token()?;
    let (csrf, _) = keys::token()?;
    let now = app.now();
    let (_guard, mut tx) = app.db.begin_write().await?;
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, key_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash)
    .bind(&caller.key_id)
    .bind(csrf)
    .bind(now)
    .bind(now + SESSION_TTL_MS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let secure = if secure { "; Secure" } else { "" };
    let max_age = SESSION_TTL_MS / 1000;
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// End the session behind `headers`' cookie; the `Set-Cookie` value that clears it.
pub(crate) async fn close_session(app: &App, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    if let Some(token) = cookie_token(headers) {
        let (_guard, mut tx) = app.db.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(keys::token_hash(token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(HeaderValue::from_static(
        "palisade_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
    ))
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so).
pub(crate) fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A change asked from a console form: the session, and the form as `T`, after the form's
/// `csrf` field matched the session's token.
#[derive(Debug)]
pub(crate) struct Change<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<App>> for Change<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, app).await?;
        let req = Request::from_parts(parts, body);
        let RawBody(bytes) = RawBody::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let sent: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid form: {e}")).into_response())?;
        if !bool::from(sent.csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            let e = ApiError::Forbidden(
                "the form's CSRF token is not the one issued at sign-in; reload the page"
                    .to_owned(),
            );
            return Err(view::error_page(Some(&session), &e));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            view::error_page(
                Some(&session),
                &ApiError::BadRequest(format!("invalid form: {e}")),
            )
        })?;
        Ok(Self { session, form })
    }
}

/// Render a template as a page, or a 500 that says only "internal error".
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::Internal(format!("rendering a page: {e}")).into_response(),
    }
}

/// A page with a status other than 200.
pub(crate) fn render_status(status: StatusCode, t: &impl Template) -> Response {
    let mut r = render(t);
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::{Clock, Config};

    #[derive(Debug)]
    struct Manual(AtomicI64);

    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    const KEY: &str = "pal_console_test_admin_key_0123";

    #[tokio::test]
    async fn a_session_lasts_its_ttl_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual(AtomicI64::new(1_800_000_000_000)));
        let config = Config {
            database: dir.path().join("cp.db").display().to_string(),
            report_interval_ms: 1000,
            admin_key: Some(KEY.to_owned()),
            forget_gateways_after_ms: 900_000,
        };
        let (app, _) = App::open(&config, clock.clone()).await.unwrap();
        let caller = app
            .authenticate(Some(&format!("Bearer {KEY}")))
            .await
            .unwrap();
        let cookie = open_session(&app, &caller, false).await.unwrap();
        let token = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("palisade_session=")
            .to_owned();
        assert_eq!(token.len(), 64);
        assert!(load_session(&app, &token).await.unwrap().is_some());
        assert!(load_session(&app, "0".repeat(64).as_str())
            .await
            .unwrap()
            .is_none());
        clock.0.fetch_add(SESSION_TTL_MS - 1, Ordering::Relaxed);
        assert!(load_session(&app, &token).await.unwrap().is_some());
        clock.0.fetch_add(1, Ordering::Relaxed);
        assert!(
            load_session(&app, &token).await.unwrap().is_none(),
            "expired"
        );
    }
}
