"""The console walk of `console_browser.rs`: a real Chromium, driven by Playwright, against the
real control plane and gateways that the Rust test started. Prints OK when every step held;
any failed expectation raises and names the step."""

import hashlib
import json
import os
import re
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

CP = os.environ["CP_URL"]
ADMIN = os.environ["ADMIN_KEY"]
VIEWER = os.environ["VIEWER_KEY"]
DEV = os.environ["DEV_GATEWAY"]
STAGING = os.environ["STAGING_GATEWAY"]
SHOTS = os.environ["SHOTS"]
expect.set_options(timeout=30_000)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def chat(gateway, text):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
    req = urllib.request.Request(
        gateway + "/v1/chat/completions",
        data=body.encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def key_id(secret):
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def sign_in(page, key):
    page.goto(CP + "/sign-in")
    page.fill("#key", key)
    page.click("form[action='/sign-in'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/environments$"))


def until(page, url, check, what, seconds=30):
    """Reload `url` until `check(page)` is true."""
    deadline = time.time() + seconds
    while True:
        page.goto(url)
        if check(page):
            return
        if time.time() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s on {url}")
        time.sleep(0.3)


def gateway_state(page, env):
    rows = page.locator(f"tr[data-gateway]").all()
    return [(r.locator("td").nth(4).inner_text(), r.locator("td").nth(5).inner_text()) for r in rows]


def synced(page, env, version):
    until(
        page,
        f"{CP}/gateways?environment={env}",
        lambda p: ("SYNCED", version) in gateway_state(p, env),
        f"{env} gateway SYNCED at {version}",
    )


def change_buttons(page):
    """Every submit button of a form that changes something (not the header's sign-out)."""
    return page.locator("main form[method=post] button[type=submit]").all()


with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=os.environ["CHROMIUM"], headless=True)
    admin = browser.new_context(viewport={"width": 1400, "height": 900})
    page = admin.new_page()
    # Every script or style the pages load must be allowed by their Content-Security-Policy:
    # a violation (or a script error) is a console error, and any fails the walk.
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "404" not in m.text and "403" not in m.text and "422" not in m.text and "401" not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # A wrong key is refused on the sign-in page itself.
    page.goto(CP + "/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.fill("#key", "pal_not_a_key")
    page.click("form[action='/sign-in'] button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("not an active key")
    shot(page, "sign-in")

    sign_in(page, ADMIN)
    expect(page.locator("#who")).to_contain_text("admin")

    # Configurations → the pack → deploy 1.0.0 to dev with a note.
    page.goto(CP + "/packs")
    expect(page.locator("table")).to_contain_text("test")
    page.fill("input[name=q]", "nomatch")
    page.click("form[role=search] button")
    expect(page.locator("main")).to_contain_text("No pack matches")
    page.goto(CP + "/packs?q=tes")
    shot(page, "packs")
    page.click("a[href='/packs/test']")
    expect(page.locator("tr[data-version='1.0.0']")).to_be_visible()
    shot(page, "pack")
    page.goto(CP + "/packs/test/deploy?version=1.0.0&environment=dev")
    expect(page.locator("#overall")).to_contain_text("first deploy")
    page.fill("#note", "first rollout to dev")
    page.click("#deploy-button")
    expect(page).to_have_url(re.compile(r"/gateways\?environment=dev$"))
    synced(page, "dev", "1.0.0")

    # Traffic under 1.0.0: one address is escalated, one clean request passes.
    assert chat(DEV, "please mail ann@example.com") == 200
    assert chat(DEV, "hello there") == 200

    # The editor: a typo shows its diagnostic at its line while typing.
    page.goto(CP + "/packs/test/edit?from=1.0.0")
    original = page.input_value("#yaml")
    lines = original.split("\n")
    typo_line = next(i for i, l in enumerate(lines, 1) if "action: escalate" in l)
    page.fill("#yaml", original.replace("action: escalate", "action: escalat"))
    item = page.locator(f"#diagnostics li[data-line='{typo_line}']")
    expect(item).to_contain_text(f"line {typo_line}")
    expect(item).to_contain_text("escalat")
    # ... and under the line itself in the listing of the marked lines.
    marked = page.locator(f"#listing li.marked[data-line='{typo_line}']")
    expect(marked).to_contain_text("action: escalat")
    expect(marked.locator(".diag")).to_contain_text("INVALID_VALUE")
    shot(page, "editor-typo")
    # Saving a broken pack is refused with the same diagnostic (the server checks too).
    page.fill("#note", "typo")
    page.click("#save")
    expect(page.locator(f"#listing li.marked[data-line='{typo_line}'] .diag")).to_be_visible()

    # Fixed and stricter: 2.0.0 blocks what 1.0.0 escalated.
    fixed = original.replace("version: 1.0.0", "version: 2.0.0").replace(
        "action: escalate", "action: block"
    )
    page.fill("#yaml", fixed)
    expect(page.locator("#check-state")).to_have_text("Valid.")
    expect(page.locator("#tests li.pass").first).to_be_visible()
    page.fill("#note", "block addresses instead of escalating them; dev first")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"/packs/test/deploy\?version=2\.0\.0"))
    page.goto(CP + "/packs/test/deploy?version=2.0.0&environment=dev")
    expect(page.locator("#overall")).to_contain_text("stricter")
    expect(page.locator("#changes tr.effect.stricter").first).to_contain_text("action")
    shot(page, "deploy-review")
    page.fill("#note", "2.0.0 to dev")
    page.click("#deploy-button")
    synced(page, "dev", "2.0.0")
    shot(page, "gateways-synced")
    assert chat(DEV, "mail bob@example.org") == 400, "2.0.0 blocks addresses"

    # Compare the two versions: the stricter change is marked.
    page.goto(CP + "/packs/test/compare?from=1.0.0&to=2.0.0")
    expect(page.locator("#overall")).to_contain_text("stricter")
    expect(page.locator("#changes tr.effect.stricter")).to_contain_text("pii-detector")
    expect(page.locator("#yaml-diff .ins").first).to_contain_text("2.0.0")
    shot(page, "compare")

    # A new configuration from the console alone: the starter pack, renamed, checked, saved.
    page.goto(CP + "/packs")
    page.click("a[href='/new-pack']")
    starter = page.input_value("#yaml")
    page.fill("#yaml", starter.replace("name: my-pack", "name: console-made"))
    expect(page.locator("#check-state")).to_have_text("Valid.")
    expect(page.locator("#tests li.pass").first).to_contain_text("1 passed")
    page.fill("#note", "a pack written in the console")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"/packs/console-made/deploy\?version=0\.1\.0"))
    expect(page.locator("#overall")).to_contain_text("first deploy")
    page.goto(CP + "/packs")
    expect(page.locator("table")).to_contain_text("console-made")

    # Prod's promote dialog: staging runs nothing, so its gates fail and the button is off.
    page.goto(CP + "/environments/prod/promote?pack=test")
    expect(page.locator("li[data-gate='source_verified'][data-passed='false']")).to_be_visible()
    expect(page.locator("#promote-button")).to_be_disabled()
    shot(page, "promote-refused")

    # dev → staging: every gate passes; promote.
    page.goto(CP + "/environments/staging/promote?pack=test")
    expect(page.locator("li[data-gate][data-passed='false']")).to_have_count(0)
    page.fill("#note", "2.0.0 held in dev")
    page.click("#promote-button")
    synced(page, "staging", "2.0.0")

    # staging → prod needs one request of runtime evidence: refused until it exists.
    page.goto(CP + "/environments/prod/promote?pack=test")
    expect(page.locator("li[data-gate='runtime_evidence'][data-passed='false']")).to_contain_text(
        "fewer than the 1 required"
    )
    expect(page.locator("#promote-button")).to_be_disabled()
    assert chat(STAGING, "hello from staging") == 200
    until(
        page,
        CP + "/environments/prod/promote?pack=test",
        lambda p: p.locator("li[data-gate][data-passed='false']").count() == 0,
        "prod's gates passing",
    )
    expect(page.locator("#promote-button")).to_be_enabled()
    shot(page, "promote-ready")
    page.fill("#note", "2.0.0 verified in staging")
    page.click("#promote-button")
    expect(page).to_have_url(re.compile(r"/gateways\?environment=prod$"))
    expect(page.locator("table")).to_contain_text("2.0.0")

    # Environments: roll dev back to 1.0.0.
    page.goto(CP + "/environments")
    expect(page.locator("#env-prod .desired")).to_have_text("2.0.0")
    shot(page, "environments")
    card = page.locator("#env-dev")
    card.locator("select[name=to]").select_option("1.0.0")
    card.locator("form[action='/environments/dev/rollback'] input[name=note]").fill("back to 1.0.0")
    card.locator("form[action='/environments/dev/rollback'] button").click()
    synced(page, "dev", "1.0.0")

    # Events: the traffic of the window, per version.
    until(
        page,
        CP + "/events?environment=dev&since=1h",
        lambda p: p.locator("#events tr.outcome.escalated").count() == 1
        and p.locator("#events tr.outcome.blocked").count() == 1,
        "dev's escalated and blocked events",
    )
    expect(page.locator("#summary tr[data-version='1.0.0']")).to_contain_text("escalated 1")
    expect(page.locator("#summary tr[data-version='2.0.0']")).to_contain_text("blocked 1")
    expect(page.locator("svg.chart polyline").first).to_be_attached()
    shot(page, "events")

    # Escalations: resolve the one the 1.0.0 traffic opened.
    page.goto(CP + "/escalations?state=open")
    row = page.locator("tr[data-escalation]")
    expect(row).to_have_count(1)
    row.locator("select[name=resolution]").select_option("false_positive")
    row.locator("form[action$='/resolve'] input[name=note]").fill("a test address")
    row.locator("form[action$='/resolve'] button").click()
    page.goto(CP + "/escalations")
    expect(page.locator("tr[data-escalation] .esc-state")).to_have_text("resolved")
    shot(page, "escalations")

    # History: every move, the chain verified.
    page.goto(CP + "/history")
    expect(page.locator("#chain")).to_contain_text("chain verified")
    for action in ["deploy", "promote", "rollback", "escalation.resolve"]:
        expect(page.locator("#history")).to_contain_text(action)
    shot(page, "history")

    # Reading needs no JavaScript: sign in and read the pages with it switched off.
    nojs = browser.new_context(java_script_enabled=False)
    npage = nojs.new_page()
    sign_in(npage, ADMIN)
    for url, sel in [("/environments", "#env-dev"), ("/events?environment=dev", "#events tr"),
                     ("/packs/test/compare?from=1.0.0&to=2.0.0", "#changes tr.effect.stricter"),
                     ("/gateways", "tr[data-gateway]"), ("/history", "#history tr")]:
        npage.goto(CP + url)
        expect(npage.locator(sel).first).to_be_visible()
    nojs.close()

    # Keys: a new key's secret is shown once.
    page.goto(CP + "/keys")
    page.select_option("#new-key select[name=role]", "deployer")
    page.click("#new-key button")
    expect(page.locator("#secret")).to_have_text(re.compile(r"^pal_[0-9a-f]{64}$"))
    shot(page, "keys-created")
    page.goto(CP + "/keys")
    expect(page.locator("#secret")).to_have_count(0)

    # A viewer: sees everything, can change nothing (an open escalation shows its buttons).
    assert chat(DEV, "mail carol@example.com") == 200, "1.0.0 again escalates"
    until(
        page,
        CP + "/escalations?state=open",
        lambda p: p.locator("tr[data-escalation]").count() == 1,
        "a new open escalation",
    )
    viewer_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    vpage = viewer_ctx.new_page()
    sign_in(vpage, VIEWER)
    expect(vpage.locator("#who")).to_contain_text("viewer")
    expect(vpage.locator("nav a[href='/keys']")).to_have_count(0)
    shot(vpage, "viewer-environments")
    for url in [
        "/environments",
        "/escalations",
        "/packs/test/edit?from=1.0.0",
        "/packs/test/deploy?version=2.0.0&environment=dev",
        "/environments/staging/promote?pack=test",
    ]:
        vpage.goto(CP + url)
        buttons = [b for b in change_buttons(vpage) if b.get_attribute("value") != "validate"]
        assert buttons, f"{url} shows its change controls (disabled)"
        for b in buttons:
            assert b.is_disabled(), f"{url}: an enabled change button for a viewer"
    csrf = vpage.locator("input[name=csrf]").first.get_attribute("value")
    forged = viewer_ctx.request.post(
        CP + "/packs/test/deploy",
        form={"csrf": csrf, "version": "2.0.0", "environment": "dev", "note": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403 and "FORBIDDEN" in forged.text(), (forged.status, forged.text()[:300])
    no_token = viewer_ctx.request.post(
        CP + "/escalations/x/resolve",
        form={"resolution": "expected", "note": "forged"},
        max_redirects=0,
    )
    assert no_token.status == 403 and "CSRF" in no_token.text(), no_token.status
    page.goto(CP + "/history")
    expect(page.locator("#history tr.refused").first).to_contain_text("deploy")

    # Revoking the viewer's key (as admin) ends its session.
    page.goto(CP + "/keys")
    vrow = page.locator(f"tr[data-key='{key_id(VIEWER)}']")
    vrow.locator("button").click()
    expect(page.locator(f"tr[data-key='{key_id(VIEWER)}'] .key-state")).to_have_text("revoked")
    vpage.goto(CP + "/environments")
    expect(vpage).to_have_url(re.compile(r"/sign-in$"))

    # Signing out ends the admin's session too.
    page.click("header form button")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.goto(CP + "/environments")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    browser.close()

assert not problems, f"browser console errors: {problems}"
print("OK")
