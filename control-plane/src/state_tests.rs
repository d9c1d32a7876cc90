//! The state rules and verification, driven by an explicit clock.

use super::*;

const T: Timing = Timing {
    report_interval_ms: 1000,
    forget_after_ms: 60_000,
};

fn desired(hash: &str, since: i64) -> DesiredRef {
    DesiredRef {
        version: format!("v-{hash}"),
        hash: hash.to_owned(),
        since,
    }
}

fn gw(seen: i64, active: Option<(&str, i64)>) -> GatewayFacts {
    GatewayFacts {
        registered_at: 0,
        last_seen_at: seen,
        active_hash: active.map(|(h, _)| h.to_owned()),
        active_since: active.map(|(_, s)| s),
        attempt_version: None,
        attempt_nack: false,
    }
}

#[test]
fn synced_when_active_equals_desired() {
    let d = desired("h1", 100);
    let g = gw(1000, Some(("h1", 200)));
    assert_eq!(gateway_state(1500, T, Some(&d), &g), GatewayState::Synced);
}

#[test]
fn offline_after_three_silent_intervals_even_if_synced() {
    let d = desired("h1", 100);
    let g = gw(1000, Some(("h1", 200)));
    assert_eq!(gateway_state(4000, T, Some(&d), &g), GatewayState::Synced);
    assert_eq!(gateway_state(4001, T, Some(&d), &g), GatewayState::Offline);
}

#[test]
fn pending_until_the_convergence_window_passes_then_stale() {
    let d = desired("h2", 10_000);
    let g = gw(12_000, Some(("h1", 200)));
    assert_eq!(
        gateway_state(12_500, T, Some(&d), &g),
        GatewayState::Pending
    );
    let g = gw(13_500, Some(("h1", 200)));
    assert_eq!(gateway_state(13_500, T, Some(&d), &g), GatewayState::Stale);
}

#[test]
fn nack_of_the_desired_version_is_rejected_not_pending() {
    let d = desired("h2", 10_000);
    let mut g = gw(10_100, Some(("h1", 200)));
    g.attempt_version = Some("v-h2".to_owned());
    g.attempt_nack = true;
    assert_eq!(
        gateway_state(10_200, T, Some(&d), &g),
        GatewayState::Rejected
    );
}

#[test]
fn nack_of_an_older_version_does_not_mark_the_new_one_rejected() {
    let d = desired("h3", 10_000);
    let mut g = gw(10_100, Some(("h1", 200)));
    g.attempt_version = Some("v-h2".to_owned());
    g.attempt_nack = true;
    assert_eq!(
        gateway_state(10_200, T, Some(&d), &g),
        GatewayState::Pending
    );
}

#[test]
fn no_desired_version_is_pending() {
    assert_eq!(
        gateway_state(10, T, None, &gw(0, None)),
        GatewayState::Pending
    );
}

#[test]
fn verified_only_after_the_soak_from_the_latest_start() {
    let d = desired("h1", 1_000);
    let gws = vec![
        ("a".to_owned(), gw(9_000, Some(("h1", 2_000)))),
        ("b".to_owned(), gw(9_000, Some(("h1", 5_000)))),
    ];
    let v = verification(9_000, T, "h1", Some(&d), &gws, 5_000);
    assert!(!v.verified, "{v:?}");
    assert_eq!(v.holding_since, Some(5_000));
    assert!(v.reasons[0].contains("soak"), "{v:?}");
    let v = verification(10_000, T, "h1", Some(&d), &gws, 5_000);
    assert!(v.verified, "{v:?}");
    assert_eq!(v.synced_gateways, 2);
}

#[test]
fn offline_gateways_do_not_block_but_an_empty_fleet_is_not_verified() {
    let d = desired("h1", 0);
    let gws = vec![
        ("live".to_owned(), gw(9_500, Some(("h1", 100)))),
        ("dead".to_owned(), gw(10, Some(("h0", 5)))),
    ];
    assert!(verification(10_000, T, "h1", Some(&d), &gws, 0).verified);
    let none: Vec<(String, GatewayFacts)> = vec![];
    let v = verification(10_000, T, "h1", Some(&d), &none, 0);
    assert!(!v.verified);
    assert!(v.reasons.iter().any(|r| r.contains("no live gateway")));
}

#[test]
fn one_rejected_gateway_revokes_verification() {
    let d = desired("h1", 0);
    let mut bad = gw(9_500, Some(("h0", 100)));
    bad.attempt_version = Some("v-h1".to_owned());
    bad.attempt_nack = true;
    let gws = vec![
        ("good".to_owned(), gw(9_500, Some(("h1", 100)))),
        ("bad".to_owned(), bad),
    ];
    let v = verification(10_000, T, "h1", Some(&d), &gws, 0);
    assert!(!v.verified);
    assert_eq!(v.reasons, vec!["gateway bad is REJECTED".to_owned()]);
}

#[test]
fn a_different_desired_hash_is_not_verified_at_the_asked_hash() {
    let d = desired("h2", 0);
    let gws = vec![("a".to_owned(), gw(9_500, Some(("h2", 100))))];
    let v = verification(10_000, T, "h1", Some(&d), &gws, 0);
    assert!(!v.verified);
    assert!(v.reasons[0].contains("desired version"), "{v:?}");
}
