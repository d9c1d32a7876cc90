// Palisade console: the only script. Pages work without it; it adds checking while typing in
// the editor (the same checks as `palisade validate`, from POST /console/validate) and jumping
// to a diagnostic's line.
"use strict";
(function () {
  const yaml = document.getElementById("yaml");
  if (!yaml) return;
  const list = document.getElementById("diagnostics");
  const tests = document.getElementById("tests");
  const state = document.getElementById("check-state");
  const listing = document.getElementById("listing");
  let timer = null, seq = 0;

  function item(cls, html) { const li = document.createElement("li"); li.className = cls; li.append(...html); return li; }
  function text(s) { return document.createTextNode(s); }
  function code(s) { const c = document.createElement("code"); c.textContent = s; return c; }

  function goTo(line, column) {
    const lines = yaml.value.split("\n");
    let pos = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
    pos += Math.max(0, (column || 1) - 1);
    yaml.focus();
    yaml.setSelectionRange(pos, pos);
  }
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li[data-line]");
    if (li) goTo(Number(li.dataset.line), Number(li.dataset.column));
  });

  async function check() {
    const mine = ++seq;
    state.textContent = "Checking…";
    let body;
    try {
      const r = await fetch(yaml.dataset.validate, {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ yaml: yaml.value }),
      });
      body = await r.json();
    } catch (err) { state.textContent = "Could not check: " + err; return; }
    if (mine !== seq) return;
    list.replaceChildren();
    for (const d of body.diagnostics || []) {
      const li = item(d.severity, [text(`line ${d.line}, column ${d.column}: `), code(d.code), text(" " + d.message + (d.expected ? ` (expected ${d.expected})` : ""))]);
      li.dataset.line = d.line; li.dataset.column = d.column;
      list.append(li);
    }
    // The lines the diagnostics point at, with two lines of context, each diagnostic under its line.
    listing.replaceChildren();
    const src = yaml.value.split("\n");
    const marked = (body.diagnostics || []).map((d) => d.line);
    src.forEach((t, i) => {
      const n = i + 1;
      if (!marked.some((m) => Math.abs(m - n) <= 2)) return;
      const li = document.createElement("li");
      li.value = n; li.dataset.line = n;
      li.append(code(t));
      for (const d of body.diagnostics.filter((d) => d.line === n)) {
        li.className = "marked";
        const div = document.createElement("div"); div.className = "diag";
        div.textContent = "↑ " + d.code + " " + d.message;
        li.append(div);
      }
      listing.append(li);
    });
    tests.replaceChildren();
    for (const t of body.tests || []) {
      const strong = document.createElement("strong"); strong.textContent = t.name;
      const li = item(t.passed ? "pass" : "fail", [strong, text(": " + t.detail)]);
      for (const n of t.notes || []) { const div = document.createElement("div"); div.className = "note"; div.textContent = n; li.append(div); }
      tests.append(li);
    }
    const n = (body.diagnostics || []).length;
    state.textContent = n === 0 ? "Valid." : `${n} diagnostic(s).`;
  }
  yaml.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 400); });
})();
