// saga-tracker web page: a list of sagas with filters and counts, a detail view, operator actions.
// No build step. Every value from the API is rendered with textContent, never as HTML.

const $ = (sel) => document.querySelector(sel);
const STATUSES = ["awaiting_start", "running", "compensating", "completed", "compensated", "failed_needs_manual", "resolved"];
const state = { cursors: [null], page: 0, next: null };

function token() { return sessionStorage.getItem("saga-tracker-token") || ""; }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const resp = await fetch(path, { ...options, headers });
  const body = await resp.json().catch(() => ({ error: "bad_response", message: `HTTP ${resp.status}` }));
  if (!resp.ok) { const err = new Error(body.message || `HTTP ${resp.status}`); err.status = resp.status; throw err; }
  return body;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function badge(status) { return el("span", status, `badge s-${String(status).toLowerCase()}`); }

function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "—"; }

function left(due) {
  if (!due) return el("span", "no limit", "muted");
  const secs = Math.round(due - Date.now() / 1000);
  return secs >= 0 ? el("span", `in ${human(secs)}`) : el("span", `overdue ${human(-secs)}`, "overdue");
}

function human(secs) {
  if (secs < 120) return `${secs}s`;
  if (secs < 7200) return `${Math.round(secs / 60)}m`;
  return `${Math.round(secs / 3600)}h`;
}

function sagaLink(id) {
  const a = el("a", id);
  a.href = `#/saga/${encodeURIComponent(id)}`;
  return a;
}

// --- list -------------------------------------------------------------------------------------

function filters() {
  const p = new URLSearchParams();
  const type = $("#f-type").value, status = $("#f-status").value, step = $("#f-step").value.trim();
  if (type) p.set("saga_type", type);
  if (status) p.set("status", status);
  if (step) p.set("step", step);
  if ($("#f-stuck").checked) p.set("stuck", "true");
  if ($("#f-since").value) p.set("updated_since", new Date($("#f-since").value).toISOString());
  const q = $("#q").value.trim();
  if (q) p.set("key", q);
  p.set("limit", "50");
  return p;
}

async function loadList() {
  const params = filters();
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  const error = $("#list-error");
  try {
    const [page, stats] = await Promise.all([api(`/sagas?${params}`), api("/sagas/stats")]);
    error.hidden = true;
    renderCounts(stats);
    renderRows(page);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

function renderCounts(stats) {
  const box = $("#counts");
  box.replaceChildren();
  const totals = {};
  for (const byStatus of Object.values(stats.counts)) {
    for (const [status, n] of Object.entries(byStatus)) totals[status] = (totals[status] || 0) + n;
  }
  for (const status of STATUSES) {
    if (!totals[status]) continue;
    const b = el("button", `${status} ${totals[status]}`, `s-${status}`);
    b.type = "button";
    b.addEventListener("click", () => { $("#f-status").value = status; $("#f-stuck").checked = false; resetPages(); loadList(); });
    box.append(b);
  }
  const stuck = Object.values(stats.stuck).reduce((a, b) => a + b, 0);
  const s = el("button", `stuck ${stuck}`, stuck ? "overdue" : "muted");
  s.type = "button";
  s.addEventListener("click", () => { $("#f-stuck").checked = true; $("#f-status").value = ""; resetPages(); loadList(); });
  box.append(s);
  $("#lag").textContent = stats.behind ? "catching up: timeouts held back" : "";
  $("#lag").className = stats.behind ? "reason" : "";
}

function renderRows(page) {
  const body = $("#sagas tbody");
  body.replaceChildren();
  for (const row of page.items) {
    const tr = el("tr");
    const id = el("td"); id.append(sagaLink(row.saga_id));
    const status = el("td"); status.append(badge(row.visible_status));
    const deadline = el("td");
    deadline.append(row.deadline && !["completed", "compensated", "resolved"].includes(row.status) ? left(row.deadline) : el("span", "—", "muted"));
    tr.append(id, el("td", row.saga_type), status, el("td", row.current_step || "—"), deadline, el("td", when(row.updated_at)));
    body.append(tr);
  }
  $("#empty").hidden = page.items.length > 0;
  state.next = page.next_cursor;
  $("#next").disabled = !page.next_cursor;
  $("#first").disabled = state.page === 0;
}

function resetPages() { state.cursors = [null]; state.page = 0; }

// --- detail -----------------------------------------------------------------------------------

let current = null;

async function loadSaga(id) {
  current = id;
  try {
    render(await api(`/sagas/${encodeURIComponent(id)}`));
  } catch (e) {
    $("#d-title").textContent = id;
    $("#d-status").replaceChildren(el("span", e.status === 404 ? "No such saga." : e.message, "error"));
    for (const sel of ["#timeline", "#comps tbody", "#events tbody", "#d-keys"]) $(sel).replaceChildren();
    $("#d-reason").textContent = "";
  }
}

function render(saga) {
  $("#d-title").textContent = `${saga.saga_type} ${saga.saga_id}`;
  const status = $("#d-status");
  status.replaceChildren(badge(saga.visible_status), el("span", ` ${saga.status}, started ${when(saga.started_at)}`, "muted"));
  if (saga.awaiting) status.append(el("span", ` — awaiting ${saga.awaiting.events.join(" or ")}, `), left(saga.awaiting.deadline));
  $("#d-reason").textContent = saga.reason || "";
  const keys = $("#d-keys");
  keys.replaceChildren();
  for (const [k, v] of Object.entries(saga.keys)) keys.append(el("dt", k), el("dd", v));

  const steps = $("#timeline");
  steps.replaceChildren();
  for (const step of saga.steps) {
    const li = el("li", null, `s-${step.state}`);
    li.append(el("strong", step.name), document.createTextNode(" "), badge(step.state));
    const facts = [];
    if (step.completed_at) facts.push(`done ${when(step.completed_at)}${step.out_of_order ? " (out of order)" : ""}`);
    if (step.failed_at) facts.push(`failed ${when(step.failed_at)}`);
    if (step.comp_attempts) facts.push(`${step.comp_attempts} compensation attempt(s)`);
    if (step.comp_confirmed_at) facts.push(`undone ${when(step.comp_confirmed_at)}`);
    li.append(el("div", facts.join(" · "), "muted"));
    if (step.state === "active") { const d = el("div", "time left: "); d.append(left(step.due)); li.append(d); }
    steps.append(li);
  }

  const comps = $("#comps tbody");
  comps.replaceChildren();
  const emitted = saga.outbox.filter((o) => o.kind === "compensation");
  for (const o of emitted) {
    comps.append(row([o.id, o.payload.type, o.step, o.payload.attempt, o.confirmed ? "yes" : "not yet"]));
  }
  $("#no-comps").hidden = emitted.length > 0;

  const events = $("#events tbody");
  events.replaceChildren();
  for (const h of [...saga.history].reverse()) events.append(row([when(h.t), `${h.type} (${h.id})`, h.kind, h.step || "", h.outcome, h.detail || ""]));
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(el("td", c));
  return tr;
}

async function act(action) {
  const out = $("#action-result");
  const body = { action, actor: $("#a-actor").value.trim(), reason: $("#a-reason").value.trim() };
  if (action === "extend_deadline") body.seconds = Number($("#a-seconds").value);
  try {
    const res = await api(`/sagas/${encodeURIComponent(current)}/actions`, {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    });
    out.textContent = `${action} queued (${res.id}); its outcome appears in the timeline.`;
    out.className = "";
    setTimeout(() => loadSaga(current), 600);
  } catch (e) {
    out.textContent = `${action} refused: ${e.message}`;
    out.className = "error";
  }
}

// --- wiring -----------------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/saga\/(.+)$/);
  $("#list-view").hidden = Boolean(m);
  $("#detail").hidden = !m;
  if (m) { loadSaga(decodeURIComponent(m[1])); $("#back").focus(); } else { current = null; loadList(); }
}

async function init() {
  $("#token").value = token();
  $("#token").addEventListener("change", (e) => { sessionStorage.setItem("saga-tracker-token", e.target.value); route(); });
  for (const s of STATUSES) $("#f-status").append(new Option(s, s));
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); resetPages(); loadList(); });
  $("#f-clear").addEventListener("click", () => { $("#filters").reset(); $("#q").value = ""; resetPages(); loadList(); });
  $("#search").addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = $("#q").value.trim();
    if (!q) { location.hash = "#/"; route(); return; }
    try { await api(`/sagas/${encodeURIComponent(q)}`); location.hash = `#/saga/${encodeURIComponent(q)}`; }
    catch { location.hash = "#/"; resetPages(); route(); } // not a saga id: list the sagas with that business key
  });
  $("#next").addEventListener("click", () => { state.cursors[state.page + 1] = state.next; state.page += 1; loadList(); });
  $("#first").addEventListener("click", () => { resetPages(); loadList(); });
  for (const b of document.querySelectorAll("#actions button")) b.addEventListener("click", () => act(b.dataset.action));
  window.addEventListener("hashchange", route);
  setInterval(() => { if ($("#live").checked) { if (current) loadSaga(current); else loadList(); } }, 2000);
  try {
    const types = await api("/sagas/stats");
    for (const t of Object.keys(types.counts).sort()) $("#f-type").append(new Option(t, t));
  } catch { /* filled on next load */ }
  route();
}

init();
