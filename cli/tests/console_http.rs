//! The console's HTTP contract, without a browser: the session cookie's attributes (Secure
//! behind a TLS proxy), redirects to sign-in, CSRF on every change, the security headers, and
//! that a session ends with sign-out and with its key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod cp_support;

use cp_support::{Backend, ControlPlane, ADMIN_KEY};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sign in with `key`; the cookie pair (`palisade_session=…`) and the whole Set-Cookie value.
fn sign_in(cp: &ControlPlane, key: &str, extra: &[(&str, &str)]) -> (String, String) {
    let mut headers = vec![FORM];
    headers.extend_from_slice(extra);
    let (status, h, _) = cp.http_text("POST", "/sign-in", &headers, &format!("key={key}"));
    assert_eq!(status, 303);
    assert_eq!(header(&h, "location"), Some("/environments"));
    let set = header(&h, "set-cookie").unwrap().to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[at..at + 64].to_owned()
}

fn console_sessions_are_cookies_with_csrf_on_every_change(backend: Backend) {
    let cp = ControlPlane::start(backend, 200);
    // Not signed in: pages redirect to sign-in; a change is refused the same way.
    let (status, h, _) = cp.http_text("GET", "/environments", &[], "");
    assert_eq!((status, header(&h, "location")), (303, Some("/sign-in")));
    let (status, _, _) = cp.http_text("POST", "/keys", &[FORM], "role=admin");
    assert_eq!(status, 303);
    // Wrong and gateway keys do not sign in.
    let (status, _, body) = cp.http_text("POST", "/sign-in", &[FORM], "key=pal_nope");
    assert_eq!(status, 401);
    assert!(body.contains("not an active key"), "{body}");
    let gateway = cp.create_key("gateway", Some("dev"));
    let (status, _, _) = cp.http_text("POST", "/sign-in", &[FORM], &format!("key={gateway}"));
    assert_eq!(status, 403);

    let (cookie, set) = sign_in(&cp, ADMIN_KEY, &[]);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let (_, tls) = sign_in(&cp, ADMIN_KEY, &[("X-Forwarded-Proto", "https")]);
    assert!(tls.contains("; Secure"), "{tls}");

    let (status, h, page) = cp.http_text("GET", "/keys", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    let csp = header(&h, "content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    let csrf = csrf_of(&page);

    // A change without the session's CSRF token is refused and changes nothing.
    let with_cookie = [FORM, ("Cookie", cookie.as_str())];
    let (status, _, body) = cp.http_text("POST", "/keys", &with_cookie, "role=viewer");
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"), "{body}");
    let wrong = format!("role=viewer&csrf={}", "0".repeat(64));
    let (status, _, _) = cp.http_text("POST", "/keys", &with_cookie, &wrong);
    assert_eq!(status, 403);
    let (_, _, page) = cp.http_text("GET", "/keys", &[("Cookie", &cookie)], "");
    assert_eq!(
        page.matches("data-key=").count(),
        2,
        "admin and gateway keys only"
    );
    // With it, the key is created and its secret shown once.
    let ok = format!("role=viewer&csrf={csrf}");
    let (status, _, page) = cp.http_text("POST", "/keys", &with_cookie, &ok);
    assert_eq!(status, 200);
    assert!(page.contains("id=\"secret\">pal_"), "{page}");

    // Sign-out ends the session: the old cookie leads to sign-in again.
    let (status, h, _) = cp.http_text("POST", "/sign-out", &with_cookie, &format!("csrf={csrf}"));
    assert_eq!(status, 303);
    assert!(header(&h, "set-cookie").unwrap().contains("Max-Age=0"));
    let (status, _, _) = cp.http_text("GET", "/keys", &[("Cookie", &cookie)], "");
    assert_eq!(status, 303);

    // Revoking a key ends its sessions.
    let viewer = cp.create_key("viewer", None);
    let (vcookie, _) = sign_in(&cp, &viewer, &[]);
    let (status, _, page) = cp.http_text("GET", "/environments", &[("Cookie", &vcookie)], "");
    assert_eq!(status, 200);
    assert!(page.contains("data-role=\"viewer\""));
    let id = page
        .split("id=\"who\" data-role=\"viewer\">")
        .nth(1)
        .unwrap();
    let id = id.split(' ').next().unwrap();
    let o = cp.cli(Some(ADMIN_KEY), &["keys", "revoke", id]);
    assert!(o.status.success(), "{}", cp_support::text(&o));
    let (status, _, _) = cp.http_text("GET", "/environments", &[("Cookie", &vcookie)], "");
    assert_eq!(status, 303);
}

on_both_backends!(console_sessions_are_cookies_with_csrf_on_every_change);
