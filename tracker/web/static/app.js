// saga-tracker web page: the flow of each saga type (landing view), the definitions, a list of
// sagas with filters, counts and batch actions, a saga's detail with its timeline and actions.
// No build step. Every value from the API is rendered with textContent, never as HTML.

const $ = (sel) => document.querySelector(sel);
const STATUSES = ["awaiting_start", "running", "compensating", "completed", "compensated", "failed_needs_manual", "resolved"];
const state = { cursors: [null], page: 0, next: null, definitions: null, batch: null };
const SVG = "http://www.w3.org/2000/svg";

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
  if ($("#f-failed").value.trim()) p.set("failed_step", $("#f-failed").value.trim());
  if ($("#f-at").value.trim()) p.set("at", $("#f-at").value.trim());
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
    b.addEventListener("click", () => { $("#f-status").value = status; $("#f-stuck").checked = false; applyFilters(); });
    box.append(b);
  }
  const stuck = Object.values(stats.stuck).reduce((a, b) => a + b, 0);
  const s = el("button", `stuck ${stuck}`, stuck ? "overdue" : "muted");
  s.type = "button";
  s.addEventListener("click", () => { $("#f-stuck").checked = true; $("#f-status").value = ""; applyFilters(); });
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

// The list's filters live in the address (#/sagas?status=running&step=payment), so a count in
// the flow diagram is a link to exactly those sagas, and a filtered list can be shared.
function setFilters(params) {
  const type = params.get("saga_type") || "";
  if (type && ![...$("#f-type").options].some((o) => o.value === type)) $("#f-type").append(new Option(type, type));
  $("#f-type").value = type;
  $("#f-status").value = params.get("status") || "";
  $("#f-step").value = params.get("step") || "";
  $("#f-failed").value = params.get("failed_step") || "";
  $("#f-at").value = params.get("at") || "";
  $("#f-stuck").checked = params.get("stuck") === "true";
  $("#q").value = params.get("key") || "";
}

function listHash(params) {
  const p = new URLSearchParams(params);
  p.delete("limit");
  p.delete("cursor");
  const q = p.toString();
  return q ? `#/sagas?${q}` : "#/sagas";
}

function applyFilters() {
  resetPages();
  const target = listHash(filters());
  if (location.hash !== target) location.hash = target; else loadList();
}

// --- detail -----------------------------------------------------------------------------------

let current = null;

async function loadSaga(id) {
  current = id;
  try {
    render(await api(`/sagas/${encodeURIComponent(id)}`));
  } catch (e) {
    $("#d-title").textContent = id;
    $("#d-status").replaceChildren(el("span", e.status === 404 ? "No such saga." : e.message, "error"));
    for (const sel of ["#tl", "#timeline", "#comps tbody", "#events tbody", "#d-keys"]) $(sel).replaceChildren();
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

  $("#tl").replaceChildren(timeline(saga));
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

// --- flow diagram -------------------------------------------------------------------------------

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function secs(v) {
  if (v === null || v === undefined) return "—";
  if (v < 1) return `${Math.round(v * 1000)}ms`;
  if (v < 120) return `${Math.round(v * 10) / 10}s`;
  return human(Math.round(v));
}

async function definitions() {
  if (!state.definitions) state.definitions = (await api("/definitions")).definitions;
  return state.definitions;
}

const BOX_W = 190, BOX_H = 132, GAP = 46, PAD = 14;

// One saga type: its steps left to right, each with its counts as links to the list; beneath,
// what fails each step and the compensation path (newest completed step undone first).
function flowDiagram(def, cells) {
  const n = def.steps.length;
  const width = PAD * 2 + n * BOX_W + (n - 1) * GAP, height = BOX_H + 150;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": `Flow of ${def.name}` });
  const defs = svg("defs");
  for (const [id, colour] of [["arrow", "#5b6675"], ["arrow-back", "#9a6100"]]) {
    const m = svg("marker", { id: `${id}-${def.name}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: colour }));
    defs.append(m);
  }
  root.append(defs);
  def.steps.forEach((step, i) => {
    const c = cells[step.name] || { pending: 0, stuck: 0, failed: 0, compensated: 0, completed: 0, p50_seconds: null, p95_seconds: null };
    const x = PAD + i * (BOX_W + GAP), y = PAD;
    const trouble = c.stuck > 0 ? "stuck" : c.failed > 0 ? "failed" : c.pending > 0 ? "busy" : "quiet";
    const g = svg("g", { class: `step t-${trouble}`, "data-step": step.name });
    g.append(svg("rect", { x, y, width: BOX_W, height: BOX_H, rx: 8 }));
    g.append(svg("text", { x: x + 10, y: y + 20, class: "step-name" }, step.name));
    if (step.timeout !== null) g.append(svg("text", { x: x + BOX_W - 10, y: y + 20, class: "timeout", "text-anchor": "end" }, `timeout ${secs(step.timeout)}`));
    const base = { saga_type: def.name };
    const rows = [
      ["pending", c.pending, { ...base, status: "running", step: step.name }],
      ["stuck", c.stuck, { ...base, at: step.name, stuck: "true" }],
      ["failed", c.failed, { ...base, failed_step: step.name }],
      ["compensated", c.compensated, { ...base, failed_step: step.name, status: "compensated" }],
    ];
    rows.forEach(([label, count, params], r) => {
      const link = svg("a", { href: listHash(params), class: `count c-${label}${count ? "" : " zero"}`, "data-count": label, "aria-label": `${def.name} ${step.name}: ${count} ${label}` });
      link.append(svg("text", { x: x + 10, y: y + 44 + r * 18 }, `${label} ${count}`));
      g.append(link);
    });
    g.append(svg("text", { x: x + 10, y: y + 44 + 4 * 18 + 4, class: "durations" }, `p50 ${secs(c.p50_seconds)} · p95 ${secs(c.p95_seconds)}`));
    root.append(g);
    if (i < n - 1) {
      root.append(svg("line", { x1: x + BOX_W, y1: y + BOX_H / 2, x2: x + BOX_W + GAP - 2, y2: y + BOX_H / 2, class: "forward", "marker-end": `url(#arrow-${def.name})` }));
    }
    // Beneath: what fails the step, and its undo (drawn right to left: newest first).
    const below = y + BOX_H + 24;
    if (step.failed_by.length) g.append(svg("text", { x: x + 10, y: below, class: "fails" }, `✕ ${step.failed_by.join(", ")}`));
    if (step.compensation) {
      g.append(svg("text", { x: x + 10, y: below + 40, class: "undo" }, `↶ ${step.compensation.emit}`));
      g.append(svg("text", { x: x + 10, y: below + 58, class: "undo muted-svg" }, `✓ ${step.compensation.confirmed_by.join(", ")}`));
    } else {
      g.append(svg("text", { x: x + 10, y: below + 40, class: "undo" }, "no compensation"));
    }
  });
  if (n > 1) {
    const y = PAD + BOX_H + 46;
    root.append(svg("line", { x1: PAD + (n - 1) * (BOX_W + GAP) + BOX_W / 2, y1: y, x2: PAD + BOX_W / 2, y2: y, class: "backward", "marker-end": `url(#arrow-back-${def.name})` }));
    root.append(svg("text", { x: width - PAD, y: y - 6, class: "undo", "text-anchor": "end" }, "compensation: newest completed step first"));
  }
  return root;
}

// Where traffic drifts from the definition (since each worker started): a new event type, steps
// out of their declared order, completions after a timeout, undos nobody asked for.
const DRIFTS = [
  ["undeclared_event_type", "undeclared event types"],
  ["steps_out_of_order", "steps out of order"],
  ["completed_after_timeout", "completed after timeout"],
  ["unrequested_confirmation", "unrequested undos"],
];

function driftLine(name, drift) {
  const p = el("p", null, "drift");
  p.setAttribute("aria-label", `Drift of ${name} from its definition`);
  const d = drift || {};
  const total = DRIFTS.reduce((n, [k]) => n + (d[k] || 0), 0);
  p.append(el("span", total ? "drift from the definition: " : "no drift from the definition", total ? "reason" : "muted"));
  if (!total) return p;
  DRIFTS.forEach(([k, label]) => {
    if (!d[k]) return;
    const part = el("span", `${label} ${d[k]}`, `d-${k}`);
    part.dataset.drift = k;
    p.append(part);
    if (k === "undeclared_event_type") {
      const names = Object.entries(d.undeclared_types || {}).sort((a, b) => b[1] - a[1]).slice(0, 5);
      p.append(el("span", ` (${names.map(([t, n]) => `${t} ${n}`).join(", ")})`, "muted"));
    }
    p.append(document.createTextNode(" · "));
  });
  p.lastChild.remove();
  return p;
}

async function loadFlow() {
  const error = $("#flow-error");
  try {
    const [defs, stats] = await Promise.all([definitions(), api("/sagas/stats")]);
    error.hidden = true;
    renderCounts(stats);
    const box = $("#flows");
    const focused = document.activeElement && document.activeElement.getAttribute("aria-label");
    box.replaceChildren();
    for (const def of defs.filter((d) => d.current)) {
      const cells = (stats.flow || {})[def.name] || {};
      const section = el("section", null, "flow");
      section.setAttribute("aria-label", def.name);
      const h = el("h2");
      const link = el("a", def.name);
      link.href = `#/definitions/${encodeURIComponent(def.name)}`;
      h.append(link, el("span", `  v${def.version} · ${Object.values((stats.counts || {})[def.name] || {}).reduce((a, b) => a + b, 0)} sagas · stuck ${(stats.stuck || {})[def.name] || 0}`, "muted"));
      section.append(h, driftLine(def.name, (stats.conformance || {})[def.name]), flowDiagram(def, cells));
      box.append(section);
    }
    if (focused) { // a live refresh keeps the keyboard where it was
      const again = [...box.querySelectorAll("a")].find((a) => a.getAttribute("aria-label") === focused);
      if (again) again.focus();
    }
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

// --- definitions ----------------------------------------------------------------------------------

async function loadDefinitions(only) {
  const box = $("#defs");
  try {
    const defs = await definitions();
    box.replaceChildren();
    $("#def-title").textContent = only ? `Definition of ${only}` : "Definitions";
    for (const def of defs.filter((d) => !only || d.name === only)) {
      const section = el("section", null, "definition");
      section.append(el("h3", `${def.name} v${def.version}${def.current ? " (current)" : ""}`));
      if (def.description) section.append(el("p", def.description));
      const facts = el("dl");
      const policy = def.compensation_policy;
      for (const [k, v] of [
        ["topics", def.topics.join(", ")],
        ["starts with", def.start],
        ["saga id from", def.correlation.saga_id.join(" or ")],
        ["time to live", def.ttl === null ? "none" : secs(def.ttl)],
        ["compensation", `confirm within ${secs(policy.confirm_timeout)}, ${policy.max_attempts} attempts, backoff ×${policy.backoff}, at most ${secs(policy.max_delay)}`],
        ["ignored events", def.ignore.join(", ") || "none"],
      ]) facts.append(el("dt", k), el("dd", v));
      section.append(facts);
      const table = el("table");
      table.append(row(["Step", "Status while pending", "Completed by", "Failed by", "Timeout", "Compensation", "Confirmed by"]));
      table.firstChild.querySelectorAll("td").forEach((td) => { const th = el("th", td.textContent); td.replaceWith(th); });
      for (const st of def.steps) {
        table.append(row([st.name, st.status, st.completed_by.join(", "), st.failed_by.join(", ") || "—", st.timeout === null ? "no limit" : secs(st.timeout),
          st.compensation ? st.compensation.emit : "none", st.compensation ? st.compensation.confirmed_by.join(", ") : "—"]));
      }
      section.append(table);
      for (const w of def.warnings) section.append(el("p", `warning: ${w}`, "reason"));
      box.append(section);
    }
  } catch (e) {
    box.replaceChildren(el("p", e.message, "error"));
  }
}

// --- timeline in the saga detail ------------------------------------------------------------

function isoSeconds(v) { const t = Date.parse(v); return Number.isNaN(t) ? null : t / 1000; }

// One bar per step from pending to done (or undone, or now), its deadline, timeouts, each
// compensation attempt and its confirmation, operator actions. Every mark is focusable and
// shows its record in #tl-info.
function timeline(saga) {
  const now = Date.now() / 1000;
  const marks = [];
  saga.steps.forEach((step, i) => {
    if (step.due) marks.push({ row: i, t: step.due, kind: "deadline", text: `${step.name}: deadline ${when(step.due)}` });
    if (step.comp_confirmed_at) marks.push({ row: i, t: step.comp_confirmed_at, kind: "confirmed", text: `${step.name}: undo confirmed ${when(step.comp_confirmed_at)}` });
  });
  const rowOf = (name) => saga.steps.findIndex((x) => x.name === name);
  for (const o of saga.outbox.filter((o) => o.kind === "compensation")) {
    const t = isoSeconds(o.payload.time);
    if (t !== null) marks.push({ row: rowOf(o.step), t, kind: "attempt", text: `${o.step}: compensation attempt ${o.payload.attempt} (${o.id}) ${when(t)}${o.confirmed ? ", confirmed" : ""}` });
  }
  for (const h of saga.history) {
    if (["timeout", "compensation_overdue", "compensation_failed"].includes(h.outcome)) {
      marks.push({ row: rowOf(h.step), t: h.t, kind: "timeout", text: `${h.step || ""}: ${h.outcome} ${when(h.t)} — ${h.detail || h.id}` });
    } else if (h.kind === "control") {
      marks.push({ row: h.step ? rowOf(h.step) : -1, t: h.t, kind: "action", text: `operator: ${h.outcome} ${when(h.t)} — ${h.detail || h.id}` });
    }
  }
  const times = [saga.started_at, saga.ended_at, ...saga.steps.flatMap((s) => [s.started_at, s.completed_at, s.failed_at]), ...marks.map((m) => m.t)].filter((t) => t);
  const end = saga.ended_at || now;
  const t0 = Math.min(...times), t1 = Math.max(end, ...times);
  const span = Math.max(t1 - t0, 1);
  const W = 900, LABEL = 120, ROW = 36, rows = saga.steps.length + 1;
  const x = (t) => LABEL + ((t - t0) / span) * (W - LABEL - 20);
  const root = svg("svg", { viewBox: `0 0 ${W} ${rows * ROW + 30}`, width: W, height: rows * ROW + 30, role: "group", "aria-label": `Timeline of ${saga.saga_id}` });
  saga.steps.forEach((step, i) => {
    const y = i * ROW + 8;
    root.append(svg("text", { x: 4, y: y + 15 }, step.name));
    if (step.started_at) {
      const stop = step.completed_at || step.failed_at || (step.state === "active" ? now : step.started_at);
      root.append(svg("rect", { x: x(step.started_at), y: y + 4, width: Math.max(2, x(stop) - x(step.started_at)), height: 14, class: `bar b-${step.state}` }));
    } else if (step.completed_at) {
      root.append(svg("rect", { x: x(step.completed_at) - 1, y: y + 4, width: 3, height: 14, class: `bar b-${step.state}` }));
    }
    if (step.comp_started_at) { // the undo: from when compensation began to its confirmation (or now)
      const stop = step.comp_confirmed_at || (saga.ended_at || now);
      root.append(svg("rect", { x: x(step.comp_started_at), y: y + 19, width: Math.max(2, x(stop) - x(step.comp_started_at)), height: 5, class: "bar b-undo" }));
    }
  });
  root.append(svg("text", { x: 4, y: saga.steps.length * ROW + 23 }, "operator"));
  for (const m of marks.sort((a, b) => a.t - b.t)) {
    const row = m.row >= 0 ? m.row : saga.steps.length;
    const cx = x(m.t), cy = row * ROW + 19;
    // Distinct shapes and heights, so marks at the same moment stay visible: a timeout above
    // the bar, an attempt on it, a confirmation below it, a deadline across it.
    const shape = m.kind === "deadline"
      ? svg("line", { x1: cx, y1: cy - 12, x2: cx, y2: cy + 12, class: `mark m-${m.kind}` })
      : m.kind === "timeout"
        ? svg("path", { d: `M ${cx - 6} ${cy - 13} L ${cx + 6} ${cy - 13} L ${cx} ${cy - 4} z`, class: `mark m-${m.kind}` })
        : m.kind === "confirmed"
          ? svg("rect", { x: cx - 5, y: cy + 3, width: 10, height: 10, class: `mark m-${m.kind}` })
          : svg("circle", { cx, cy, r: 6, class: `mark m-${m.kind}` });
    const g = svg("g", { tabindex: 0, class: "tl-mark", "data-kind": m.kind, "aria-label": m.text });
    g.append(svg("title", {}, m.text), shape);
    const show = () => { $("#tl-info").textContent = m.text; };
    g.addEventListener("mouseenter", show);
    g.addEventListener("focus", show);
    root.append(g);
  }
  root.append(svg("text", { x: LABEL, y: rows * ROW + 24, class: "muted-svg" }, when(t0)));
  root.append(svg("text", { x: W - 20, y: rows * ROW + 24, class: "muted-svg", "text-anchor": "end" }, saga.ended_at ? when(t1) : "now"));
  return root;
}

// --- batch actions over the list's filter ---------------------------------------------------

function batchBody(dryRun) {
  const action = $("#b-action").value;
  const body = { action, actor: $("#b-actor").value.trim(), reason: $("#b-reason").value.trim(), dry_run: dryRun };
  if (action === "extend_deadline") body.seconds = Number($("#b-seconds").value);
  return body;
}

function batchQuery() {
  const p = filters();
  p.delete("limit");
  return p;
}

async function countBatch() {
  const out = $("#b-result");
  try {
    const res = await api(`/sagas/actions?${batchQuery()}`, { method: "POST", body: JSON.stringify(batchBody(true)), headers: { "Content-Type": "application/json" } });
    out.textContent = `${res.matched} saga(s) match this filter.`;
    out.className = "";
    $("#b-run").disabled = res.matched === 0;
    $("#b-run").dataset.matched = res.matched;
  } catch (e) {
    out.textContent = `refused: ${e.message}`;
    out.className = "error";
  }
}

async function runBatch() {
  const out = $("#b-result");
  const action = $("#b-action").value, matched = $("#b-run").dataset.matched;
  if (!window.confirm(`Apply ${action} to the ${matched} saga(s) matching this filter?`)) return;
  try {
    const res = await api(`/sagas/actions?${batchQuery()}`, { method: "POST", body: JSON.stringify(batchBody(false)), headers: { "Content-Type": "application/json" } });
    out.textContent = `batch ${res.batch_id} queued for ${res.matched} saga(s).`;
    out.className = "";
    state.batch = res.batch_id;
    $("#b-run").disabled = true;
    loadBatch();
  } catch (e) {
    out.textContent = `refused: ${e.message}`;
    out.className = "error";
  }
}

async function loadBatch() {
  if (!state.batch) return;
  try {
    const b = await api(`/batches/${encodeURIComponent(state.batch)}`);
    $("#b-status").hidden = false;
    $("#b-status tbody").replaceChildren(row([b.batch_id, b.action, b.matched, b.applied, b.rejected, b.pending]));
    $("#b-rejected").replaceChildren(...b.rejections.map((r) => el("li", `${r.saga_id}: ${r.reason}`)));
  } catch (e) {
    $("#b-result").textContent = `batch ${state.batch}: ${e.message}`;
  }
}

// --- wiring -----------------------------------------------------------------------------------

function route() {
  const hash = location.hash || "#/";
  const saga = hash.match(/^#\/saga\/(.+)$/);
  const list = hash.match(/^#\/sagas(?:\?(.*))?$/);
  const defs = hash.match(/^#\/definitions(?:\/(.+))?$/);
  $("#detail").hidden = !saga;
  $("#list-view").hidden = !list;
  $("#definitions-view").hidden = !defs;
  $("#flow-view").hidden = Boolean(saga || list || defs);
  current = null;
  if (saga) { loadSaga(decodeURIComponent(saga[1])); $("#back").focus(); }
  else if (list) { setFilters(new URLSearchParams(list[1] || "")); resetPages(); loadList(); }
  else if (defs) loadDefinitions(defs[1] ? decodeURIComponent(defs[1]) : null);
  else loadFlow();
}

function refresh() {
  if (!$("#live").checked) return;
  if (current) loadSaga(current);
  else if (!$("#list-view").hidden) { loadList(); loadBatch(); }
  else if (!$("#flow-view").hidden) loadFlow();
}

async function init() {
  $("#token").value = token();
  $("#token").addEventListener("change", (e) => { sessionStorage.setItem("saga-tracker-token", e.target.value); state.definitions = null; route(); });
  for (const s of STATUSES) $("#f-status").append(new Option(s, s));
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
  $("#f-clear").addEventListener("click", () => { $("#filters").reset(); $("#q").value = ""; applyFilters(); });
  $("#search").addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = $("#q").value.trim();
    if (!q) { location.hash = "#/sagas"; return; }
    try { await api(`/sagas/${encodeURIComponent(q)}`); location.hash = `#/saga/${encodeURIComponent(q)}`; }
    catch { location.hash = listHash(new URLSearchParams({ key: q })); } // not a saga id: the sagas with that business key
  });
  $("#next").addEventListener("click", () => { state.cursors[state.page + 1] = state.next; state.page += 1; loadList(); });
  $("#first").addEventListener("click", () => { resetPages(); loadList(); });
  for (const b of document.querySelectorAll("#actions button")) b.addEventListener("click", () => act(b.dataset.action));
  $("#b-count").addEventListener("click", countBatch);
  $("#b-run").addEventListener("click", runBatch);
  for (const sel of ["#filters", "#b-action"]) $(sel).addEventListener("change", () => { $("#b-run").disabled = true; });
  window.addEventListener("hashchange", route);
  setInterval(refresh, 2000);
  try {
    for (const d of await definitions()) if (d.current && ![...$("#f-type").options].some((o) => o.value === d.name)) $("#f-type").append(new Option(d.name, d.name));
  } catch { /* filled on next load */ }
  route();
}

init();
