//! Operator routes and the local model list: `/status`, `/metrics`, `/healthz`, `/readyz`,
//! `GET /v1/models[/{id}]`.
//!
//! `/status` answers "what runs here right now": environment, pack, version, hash, when and
//! from where it was loaded, and the last reload attempt with its error, so a rejected pack is
//! visible next to the version that kept serving. `/readyz` is ready only once a pack is
//! active; `/healthz` only says the process answers. The model list is the pack's allow-list,
//! answered locally (a pack without a `models:` list allows any model and lists none).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use serde_json::json;

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::pack::ActivePack;
use crate::respond::{error_response, json, text};
use crate::state::GatewayState;

pub(crate) fn status(state: &GatewayState, pack: Option<&ActivePack>) -> Response<GatewayBody> {
    let last = state.last_reload().map(|r| {
        json!({
            "at": rfc3339(r.at),
            "result": if r.ok { "success" } else { "rejected" },
            "version": r.version,
            "error": r.error,
        })
    });
    let body = json!({
        "environment": state.environment,
        "pack": pack.map(|p| p.compiled.name.as_str()),
        "version": pack.map(ActivePack::version),
        "hash": pack.map(|p| p.hash_hex.as_str()),
        "effective_hash": pack.map(|p| p.compiled.effective_hash.to_string()),
        "loaded_at": pack.map(|p| rfc3339(p.loaded_at)),
        "source": pack.map(|p| p.source.to_string()),
        "source_kind": pack.map(|p| p.source.kind()),
        "chain": pack.map(|p| p.compiled.chain.iter().map(|k| k.name()).collect::<Vec<_>>()),
        "last_reload": last,
        "events": state.enforcement.event_sink().map(crate::control::events::EventSink::to_json),
        "deployments": state.health.snapshot(std::time::Instant::now()).iter().map(|d| json!({
            "deployment": d.deployment, "state": d.state, "consecutive_failures": d.consecutive_failures,
        })).collect::<Vec<_>>(),
    });
    json(StatusCode::OK, body.to_string())
}

pub(crate) fn metrics(state: &GatewayState) -> Response<GatewayBody> {
    text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        state.metrics.render(),
    )
}

pub(crate) fn healthz() -> Response<GatewayBody> {
    text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
}

pub(crate) fn readyz(pack: Option<&ActivePack>) -> Response<GatewayBody> {
    match pack {
        Some(_) => text(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "no policy pack is active\n",
        ),
    }
}

fn model_entry(name: &str, provider: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": provider})
}

pub(crate) fn models(pack: Option<&ActivePack>) -> Response<GatewayBody> {
    let Some(pack) = pack else {
        return error_response(&ApiError::NotReady);
    };
    let data: Vec<_> = pack
        .compiled
        .models
        .values()
        .map(|m| model_entry(&m.name, &m.provider))
        .collect();
    json(
        StatusCode::OK,
        json!({"object": "list", "data": data}).to_string(),
    )
}

pub(crate) fn model(pack: Option<&ActivePack>, id: &str) -> Response<GatewayBody> {
    let Some(pack) = pack else {
        return error_response(&ApiError::NotReady);
    };
    match pack.compiled.models.get(id) {
        Some(m) => json(
            StatusCode::OK,
            model_entry(&m.name, &m.provider).to_string(),
        ),
        None => {
            let mut resp = error_response(&ApiError::ModelNotAllowed {
                model: id.to_owned(),
            });
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    }
}

/// `2026-11-22T10:00:00Z` without a date crate (civil-from-days, Howard Hinnant's algorithm).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
