// The EdgeFleet console: a hash-routed page per view, each reading the hub's REST API with the token the
// user signed in with (sessionStorage), polling while it is shown. API errors become one line in #error.
"use strict";

const TOKEN_KEY = "edgefleet.token";
const POLL_MS = 3000;
const state = { role: null, timer: null };

// ---------------------------------------------------------------------------------------------- helpers

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const pct = (n, d) => (d ? Math.round((100 * n) / d) : 0);
const num = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : esc(v));

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body));
    throw new Error(`${response.status} ${response.statusText}: ${detail || path}`.split("\n")[0]);
  }
  return body;
}

// Replace an element's content only when it changed, so polling neither flickers nor drops clicks and focus.
const shownHtml = new WeakMap();
function setHtml(element, html) {
  if (shownHtml.get(element) === html) return false;
  shownHtml.set(element, html);
  element.innerHTML = html;
  return true;
}

function table(headers, rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

const counts = (obj) => table(["", "devices"], Object.entries(obj).map(([k, v]) => [esc(k), v]));

// Who am I: the hub's /auth/whoami when it has one; otherwise the role stays unknown and the API decides.
async function loadRole() {
  state.role = null;
  if (!sessionStorage.getItem(TOKEN_KEY)) { $("#who").textContent = ""; return; }
  try {
    const me = await api("/auth/whoami");
    state.role = me.role || null;
    $("#who").textContent = `${me.name || me.subject || "signed in"} (${state.role || "unknown role"})`;
  } catch {
    $("#who").textContent = "signed in";
  }
}

const canAct = () => state.role !== "viewer";

// ---------------------------------------------------------------------------------------------- pages

async function fleetPage(main) {
  const [summary, devices] = await Promise.all([api("/console/api/fleet"), api("/devices")]);
  setHtml(main, `<h1>Fleet</h1>
    <div class="cards">
      <div class="card" id="count-total"><b>${summary.total}</b>devices</div>
      <div class="card" id="count-online"><b>${summary.online}</b>online</div>
      <div class="card" id="count-offline"><b>${summary.total - summary.online}</b>offline</div>
    </div>
    <div class="grid">
      <div><h2>By target</h2>${counts(summary.by_target)}</div>
      <div><h2>By version</h2>${counts(summary.by_version)}</div>
      <div><h2>By update state</h2>${counts(summary.by_state)}</div>
      <div><h2>By label</h2>${counts(summary.by_label)}</div>
    </div>
    <h2>Devices</h2>
    ${table(["device", "target", "labels", "model", "online", "update", "last seen"], devices.map((d) => [
      `<a href="#/device/${encodeURIComponent(d.id)}">${esc(d.id)}</a>`, esc(d.target),
      esc(Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
      d.active_model ? esc(`${d.active_model}:${d.active_version}`) : "", d.online ? '<span class="online">online</span>' : '<span class="offline">offline</span>',
      esc(d.update_state), esc(when(d.last_seen)),
    ]))}`);
}

async function devicePage(main, id) {
  const hours = Number(new URLSearchParams(location.hash.split("?")[1]).get("hours") || 6);
  const [device, history, telemetry] = await Promise.all([
    api(`/devices/${encodeURIComponent(id)}`),
    api(`/console/api/devices/${encodeURIComponent(id)}/history`),
    api(`/console/api/devices/${encodeURIComponent(id)}/telemetry?hours=${hours}`),
  ]);
  const s = telemetry.series;
  main.innerHTML = `<h1>Device ${esc(device.id)}</h1>
    ${table(["target", "labels", "model", "online", "update state", "last seen"], [[
      esc(device.target), esc(JSON.stringify(device.labels)), esc(device.active_model ? `${device.active_model}:${device.active_version}` : ""),
      device.online ? "online" : "offline", esc(device.update_state), esc(when(device.last_seen)),
    ]])}
    <h2>Telemetry, last ${hours} h</h2><div class="grid" id="charts"></div>
    <h2>Update history</h2>
    ${table(["when", "deployment", "version", "state", "ok", "reason"], history.map((h) => [
      esc(when(h.updated_at)), esc(h.deployment_id), esc(`${h.model}:${h.version}`), esc(h.state), h.ok ? "yes" : '<span class="fail">no</span>', esc(h.detail),
    ]))}`;
  const charts = $("#charts");
  Charts.line(charts, { title: "requests", t: s.t, series: [{ label: "requests", values: s.requests }] });
  Charts.line(charts, { title: "latency (ms)", t: s.t, series: [
    { label: "p50", values: s.latency_p50 }, { label: "p95", values: s.latency_p95 }, { label: "p99", values: s.latency_p99 },
  ] });
  Charts.line(charts, { title: "errors", t: s.t, series: [{ label: "errors", values: s.errors }] });
  Charts.line(charts, { title: "confidence (mean)", t: s.t, series: [{ label: "confidence", values: s.confidence }] });
}

async function rolloutsPage(main) {
  const rollouts = await api("/rollouts");
  setHtml(main, `<h1>Rollouts</h1>${table(["rollout", "model", "state", "created", "updated"], rollouts.map((r) => [
    `<a href="#/rollout/${encodeURIComponent(r.rollout_id)}">${esc(r.rollout_id)}</a>`, esc(`${r.model}:${r.version}`),
    `<span class="state">${esc(r.state)}</span>`, esc(when(r.created_at)), esc(when(r.updated_at)),
  ]))}`);
}

const phases = (c) => `${c.succeeded + c.current} ok, ${c.dispatched} updating, ${c.pending} pending, ${c.failed + c.timed_out} failed`;

async function rolloutPage(main, id) {
  const path = `/rollouts/${encodeURIComponent(id)}`;
  const [status, timeline] = await Promise.all([api(path), api(`/console/api/rollouts/${encodeURIComponent(id)}/timeline`)]);
  const buttons = ["pause", "resume", "abort", "promote"].map((c) => {
    const allowed = status.allowed_commands.includes(c);
    return canAct() ? `<button data-command="${c}" ${allowed ? "" : "disabled"}>${c}</button>` : "";
  }).join("");
  const firstRender = !main.querySelector("#rollout-status");
  const statusHtml = `<h1>Rollout ${esc(id)} <small class="muted">${esc(status.model)}:${esc(status.version)}</small></h1>
    <p>State <b id="rollout-state">${esc(status.state)}</b>, wave ${status.wave + 1} of ${status.wave_count} (${esc(status.wave_name)}),
      ${status.on_version_percent.toFixed(1)}% on version. <span class="muted">${esc(status.reason)}</span></p>
    <p id="actions">${buttons}</p>
    <h2>Waves</h2>
    ${table(["wave", "target devices", "progress", "devices"], status.waves.map((w) => {
      const total = Object.values(w.devices).reduce((a, b) => a + b, 0);
      const done = w.devices.succeeded + w.devices.current;
      return [esc(w.name), w.cumulative_target, `<span class="bar"><span style="width:${pct(done, total)}%"></span></span> ${pct(done, total)}%`, esc(phases(w.devices))];
    }))}
    <h2>Device classes</h2>${table(["class", "devices"], Object.entries(status.classes).map(([k, c]) => [esc(k), esc(phases(c))]))}
    <h2>Gate</h2>${status.gate ? table(["wave", "attempts", "outstanding", "reasons"], [[status.gate.wave + 1, status.gate.attempts, status.gate.outstanding ? "yes" : "no", esc(status.gate.reasons.join("; "))]]) : '<p class="muted">no gate yet</p>'}
    <h2>Timeline</h2>
    ${table(["when", "wave", "from", "event", "to", "reason"], timeline.transitions.map((t) => [
      esc(when(t.at)), t.wave + 1, esc(t.source), esc(t.event), esc(t.target), esc(t.reason),
    ]))}
    <h2>Actions</h2>${table(["kind", "devices", "summary"], timeline.actions.map((a) => [esc(a.kind), a.devices, esc(a.summary)]))}`;
  if (firstRender) {
    main.innerHTML = `<div id="rollout-status"></div><h2>Canary analysis</h2><div id="canary"></div>`;
    loadCanary(id);
  }
  if (setHtml($("#rollout-status"), statusHtml)) {
    main.querySelectorAll("button[data-command]").forEach((b) => b.addEventListener("click", () => command(id, b.dataset.command)));
  }
}

async function command(id, name) {
  try {
    await api(`/rollouts/${encodeURIComponent(id)}/${name}`, { method: "POST" });
    showError("");
    await render();
  } catch (e) {
    showError(e.message);
  }
}

async function loadCanary(id) {
  const box = $("#canary");
  try {
    const report = await api(`/rollouts/${encodeURIComponent(id)}/canary`);
    box.innerHTML = `<p>Verdict <b class="${esc(report.verdict)}">${esc(report.verdict)}</b>: ${esc(report.reasons.join("; "))}</p>
      ${table(["metric", "verdict", "canary", "baseline", "change", "p", "reason"], report.metrics.map((m) => [
        esc(m.metric), `<span class="${esc(m.verdict)}">${esc(m.verdict)}</span>`, num(m.canary_value), num(m.baseline_value),
        m.relative_change === null ? "" : `${(100 * m.relative_change).toFixed(1)}%`, num(m.p_value), esc(m.reason),
      ]))}<div class="grid" id="canary-charts"></div>`;
    for (const m of report.metrics.filter((x) => x.canary_value !== null && x.baseline_value !== null)) {
      Charts.bars($("#canary-charts"), {
        title: `${m.metric} (${m.verdict})`, labels: ["canary", "baseline"], width: 240,
        series: [{ label: m.metric, values: [m.canary_value, m.baseline_value] }],
      });
    }
  } catch (e) {
    box.innerHTML = `<p class="muted">${esc(e.message)}</p>`;
  }
}

async function modelsPage(main) {
  const models = await api("/console/api/models");
  main.innerHTML = "<h1>Models</h1>" + (models.length ? "" : '<p class="muted">no models</p>') + models.map((m) => `<h2>${esc(m.name)}</h2>
    <p class="muted">${esc(m.description)}</p>
    ${m.versions.map((v) => {
      const keys = [...new Set(v.variants.flatMap((x) => Object.keys(x.metrics || {}).filter((k) => typeof x.metrics[k] === "number")))].sort();
      return `<h3>${esc(v.version)} <small class="muted">${esc(v.notes)}</small></h3>` + table(["target", "runtime", "precision", "size (KiB)", ...keys], v.variants.map((x) => [
        esc(x.target), esc(x.runtime), esc(x.precision), (x.size_bytes / 1024).toFixed(1), ...keys.map((k) => num(x.metrics[k] ?? "")),
      ]));
    }).join("")}`).join("");
}

async function driftPage(main) {
  const models = await api("/console/api/models");
  const choices = models.flatMap((m) => m.versions.map((v) => `${m.name}:${v.version}`));
  const params = new URLSearchParams(location.hash.split("?")[1]);
  const chosen = params.get("version") || choices[0];
  main.innerHTML = `<h1>Drift</h1><p>Version <select id="drift-version">${choices.map((c) => `<option ${c === chosen ? "selected" : ""}>${esc(c)}</option>`).join("")}</select></p><div id="drift"></div>`;
  $("#drift-version").addEventListener("change", (e) => { location.hash = `#/drift?version=${encodeURIComponent(e.target.value)}`; });
  if (!chosen) return;
  const [name, version] = chosen.split(":");
  const base = `/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`;
  const box = $("#drift");
  let report, distributions;
  try {
    [report, distributions] = await Promise.all([api(`${base}/drift`), api(`/console/api${base}/distributions`)]);
  } catch (e) {
    box.innerHTML = `<p class="muted">${esc(e.message)}</p>`;
    return;
  }
  const all = report.cohorts.find((c) => c.cohort === "all") || report.cohorts[0];
  const results = Object.fromEntries((all ? all.features : []).map((f) => [f.feature, f]));
  box.innerHTML = (all ? `<p>Cohort <b>${esc(all.cohort)}</b>: ${all.devices} devices, ${all.requests} requests, ${all.drifted_features} of ${all.tested_features} features drifted.</p>` : "")
    + table(["cohort", "feature", "test", "statistic", "p (adjusted)", "drifted"], report.cohorts.flatMap((c) => c.features.map((f) => [
      esc(c.cohort), esc(f.feature), esc(f.test), num(f.statistic), num(f.p_adjusted), f.drifted ? '<span class="fail">yes</span>' : esc(f.drifted === null ? f.status : "no"),
    ])))
    + '<div class="grid" id="drift-charts"></div>';
  for (const d of distributions) {
    const r = results[d.feature];
    const verdict = r ? ` (${r.test}${r.drifted ? ", drifted" : ""})` : "";
    Charts.bars($("#drift-charts"), {
      title: `${d.feature}${verdict}`, labels: d.bins,
      series: [{ label: "reference", values: d.reference }, { label: "current", values: d.current }],
    });
  }
}

function signinPage(main) {
  main.innerHTML = `<h1>Sign in</h1>
    <form class="signin"><p>API token<br><input type="password" id="token" autocomplete="off" placeholder="paste a token"></p>
    <p><button type="submit">Sign in</button> <button type="button" id="signout">Sign out</button></p>
    <p class="muted">The token is kept in this tab's session storage only and sent as a bearer token.</p></form>`;
  main.querySelector("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    await loadRole();
    location.hash = "#/fleet";
  });
  $("#signout").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    await loadRole();
  });
}

// ---------------------------------------------------------------------------------------------- routing

const ROUTES = [
  [/^#\/device\/([^?]+)/, devicePage, false],
  [/^#\/rollout\/([^?]+)/, rolloutPage, true],
  [/^#\/rollouts/, rolloutsPage, true],
  [/^#\/models/, modelsPage, false],
  [/^#\/drift/, driftPage, false],
  [/^#\/signin/, signinPage, false],
  [/^#?\/?(?:fleet)?/, fleetPage, true],
];

function route() {
  for (const [pattern, page, live] of ROUTES) {
    const match = location.hash.match(pattern);
    if (match) return { page, live, args: match.slice(1).map(decodeURIComponent) };
  }
  return { page: fleetPage, live: true, args: [] };
}

async function render() {
  const { page, args } = route();
  const main = $("#page");
  try {
    await page(main, ...args);
    main.dataset.loaded = location.hash;
  } catch (e) {
    showError(e.message);
  }
}

function navigate() {
  clearInterval(state.timer);
  showError("");
  shownHtml.delete($("#page"));
  $("#page").innerHTML = "";
  delete $("#page").dataset.loaded;
  render();
  if (route().live) state.timer = setInterval(render, POLL_MS);
}

window.addEventListener("hashchange", navigate);
loadRole().then(navigate);
