// The control page: watch and drive one replay session at a time.
//
// Documents arrive pushed over the session's WebSocket (/s/{name}/stream). Each push triggers
// one GET of the session status (position, next transition); between pushes the countdowns and
// the timeline are extrapolated locally for display only. Nothing polls on a timer.

const IMDS_VERSION = "2020-07-01";
const HISTORY_LIMIT = 50;
const DEFAULT = "default";
const IDLE_TRACE = "(idle)";

const $ = (id) => document.getElementById(id);

const view = {
  name: null, // the session shown
  status: null, // its last status (GET /replay/sessions/{name})
  statusAt: 0, // performance.now() when that status arrived
  skewMs: 0, // server wall clock minus this browser's, estimated from the status
  doc: null, // the document shown
  docText: "",
  socket: null,
  retryMs: 500,
  retryTimer: null,
  statusSeq: 0,
  history: [],
  traces: [],
  traceChosen: false, // the user picked a trace in the start form: stop following the session's
  nameEdited: false, // the user typed a session name: stop following the session shown
};

// ---- HTTP ------------------------------------------------------------------------------------

// A server bound beyond loopback needs its token: open the page as /?token=TOKEN.
const TOKEN = new URLSearchParams(location.search).get("token");

async function api(method, path, body) {
  const init = { method, headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = null;
  }
  if (!resp.ok) {
    const err = value && value.error;
    const message = (err && (err.message || err)) || `${method} ${path} answered ${resp.status}`;
    const error = new Error(String(message));
    error.status = resp.status;
    throw error;
  }
  return value;
}

const enc = encodeURIComponent;
const sessionPath = (name) => `/replay/sessions/${enc(name)}`;

function imdsPath(name) {
  const prefix = name === DEFAULT ? "" : `/s/${enc(name)}`;
  return `${prefix}/metadata/scheduledevents?api-version=${IMDS_VERSION}`;
}

// ---- formatting --------------------------------------------------------------------------------

function pad(n) {
  return String(n).padStart(2, "0");
}

/** Seconds as "14.9 s", "25m 30s" or "2h 05m". */
function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  const sign = s < 0 ? "-" : "";
  const a = Math.abs(s);
  if (a < 60) return `${sign}${a.toFixed(1)} s`;
  if (a < 3600) return `${sign}${Math.floor(a / 60)}m ${pad(Math.floor(a % 60))}s`;
  return `${sign}${Math.floor(a / 3600)}h ${pad(Math.floor((a % 3600) / 60))}m`;
}

/** A trace offset as "930 s" or "28.4 s". */
function fmtOffset(s) {
  if (!Number.isFinite(s)) return "—";
  return Number.isInteger(s) ? `${s} s` : `${s.toFixed(1)} s`;
}

function fmtSpeed(speed) {
  return `${Number(speed.toPrecision(6))}x`;
}

function parseIso(text) {
  // Python's isoformat has microseconds; keep milliseconds for Date.parse.
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

function clockTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function highlightJson(text) {
  const escaped = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  return escaped.replace(
    /("(?:\\.|[^"\\])*")(\s*:)?|(-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)|\b(true|false|null)\b/g,
    (match, str, colon, num, literal) => {
      if (str) return colon ? `<span class="k">${str}</span>${colon}` : `<span class="s">${str}</span>`;
      if (num) return `<span class="n">${num}</span>`;
      return `<span class="l">${literal}</span>`;
    },
  );
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// ---- messages ------------------------------------------------------------------------------------

let toastTimer = null;

function toast(message, isError = false) {
  const box = $("toast");
  box.textContent = message;
  box.dataset.kind = isError ? "error" : "info";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, isError ? 8000 : 3500);
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text;
}

// ---- the session shown --------------------------------------------------------------------------

function selectSession(name) {
  if (name === view.name) return;
  view.name = name;
  view.status = null;
  view.doc = null;
  view.docText = "";
  view.history = [];
  renderHistory();
  const hash = name === DEFAULT ? "" : `#session=${enc(name)}`;
  if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${hash}`);
  const picker = $("session-picker");
  if ([...picker.options].some((o) => o.value === name)) picker.value = name;
  else refreshSessions(); // started elsewhere since the list was read
  $("session-title").textContent = name;
  if (!view.nameEdited) $("start-name").value = name; // Start replaces what is shown
  $("session-endpoint").textContent = imdsPath(name);
  connect();
  refreshStatus();
}

async function refreshStatus() {
  const seq = ++view.statusSeq;
  const name = view.name;
  try {
    const status = await api("GET", sessionPath(name));
    if (seq === view.statusSeq && name === view.name) applyStatus(status);
  } catch (err) {
    if (name !== view.name) return;
    if (err.status === 404 && name !== DEFAULT) {
      toast(`session '${name}' is gone; showing '${DEFAULT}'`);
      await refreshSessions();
      selectSession(DEFAULT);
    } else {
      toast(err.message, true);
    }
  }
}

function applyStatus(status) {
  view.statusSeq += 1; // an older status still on its way must not overwrite this one
  view.status = status;
  showFaults(status.faults);
  view.statusAt = performance.now();
  const next = status.next_transition;
  if (next && next.at && next.in_s !== null) {
    view.skewMs = parseIso(next.at) - next.in_s * 1000 - Date.now();
  }
  showDocument(status.document);
  renderStatus();
}

function renderStatus() {
  const s = view.status;
  if (!s) return;
  const idle = s.trace === IDLE_TRACE;
  const stateBadge = $("session-state");
  stateBadge.textContent = idle ? "idle" : s.state;
  stateBadge.dataset.state = idle ? "idle" : s.state;
  $("session-meta").textContent = idle
    ? "no trace: start one"
    : [
        s.scenario === s.trace ? s.trace : `${s.trace} (${s.scenario})`,
        s.origin,
        fmtSpeed(s.speed),
        s.loop ? "looping" : null,
      ]
        .filter(Boolean)
        .join(" · ");
  $("duration").textContent = idle
    ? ""
    : `of ${fmtOffset(s.duration_s)} (${fmtSeconds(s.wall_duration_s)} at ${fmtSpeed(s.speed)})`;
  $("round").textContent = s.loop ? `round ${s.round + 1}` : "";
  const bar = $("timeline");
  bar.setAttribute("aria-valuemax", String(s.duration_s));
  const mark = bar.querySelector(".next-mark");
  const next = s.next_transition;
  if (next && s.duration_s > 0 && next.round === s.round) {
    mark.hidden = false;
    mark.style.left = `${(100 * next.offset_s) / s.duration_s}%`;
  } else {
    mark.hidden = true;
  }
  $("pause").disabled = s.state !== "running";
  $("resume").disabled = !["paused", "virtual", "waiting"].includes(s.state) || idle;
  $("step").disabled = !next || idle;
  $("stop").disabled = idle;
  $("seek-offset").max = String(s.duration_s);
  $("seek-offset").disabled = idle;
  $("seek-form").querySelector("button").disabled = idle;
  $("speed-change").placeholder = fmtSpeed(s.speed);
  $("speed-change").disabled = idle;
  $("speed-form").querySelector("button").disabled = idle;
  followTrace();
  markApprovals();
  tick();
}

// ---- documents and events ------------------------------------------------------------------------

function showDocument(doc) {
  const text = JSON.stringify(doc, null, 2);
  if (text === view.docText) return;
  view.doc = doc;
  view.docText = text;
  $("document").innerHTML = highlightJson(text);
  renderEvents();
}

function renderEvents() {
  const list = $("events");
  list.replaceChildren();
  const events = (view.doc && view.doc.Events) || [];
  if (events.length === 0) {
    list.append(el("li", { class: "empty" }, "No events in the current document."));
    return;
  }
  for (const event of events) {
    const status = event.EventStatus;
    const notBefore = event.NotBefore ? Date.parse(event.NotBefore) : NaN;
    const facts = el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Type"),
      el("dd", {}, event.EventType ?? "—"),
      el("dt", {}, "Resources"),
      el("dd", {}, `${event.ResourceType ?? ""} ${(event.Resources || []).join(", ")}`.trim() || "—"),
      el("dt", {}, "Source"),
      el("dd", {}, event.EventSource ?? "—"),
      el("dt", {}, "NotBefore"),
      el(
        "dd",
        {},
        event.NotBefore || "— (none: the event is under way)",
        Number.isFinite(notBefore)
          ? el("span", { class: "nb-countdown", dataset: { notBefore: String(notBefore) } })
          : null,
      ),
    );
    if (event.DurationInSeconds !== undefined && event.DurationInSeconds !== -1) {
      facts.append(el("dt", {}, "Duration"), el("dd", {}, fmtSeconds(event.DurationInSeconds)));
    }
    const card = el(
      "li",
      { class: "event", dataset: { eventId: event.EventId, status } },
      el(
        "div",
        { class: "event-head" },
        el("code", { class: "event-id" }, event.EventId),
        el("span", { class: "badge status", dataset: { status } }, status),
      ),
      facts,
    );
    if (event.Description) card.append(el("p", { class: "description" }, event.Description));
    const actions = el("div", { class: "event-actions" }, el("span", { class: "approved-note" }));
    if (status === "Scheduled") {
      const button = el(
        "button",
        { type: "button", class: "approve primary", "aria-label": `Approve event ${event.EventId}` },
        "Approve",
      );
      button.addEventListener("click", () => approve(event.EventId, button));
      actions.append(button);
    }
    card.append(actions);
    list.append(card);
  }
  markApprovals();
  tick();
}

function markApprovals() {
  const approvals = (view.status && view.status.approvals) || [];
  for (const card of $("events").querySelectorAll(".event")) {
    const mine = approvals.find((a) => a.event_id === card.dataset.eventId);
    card.querySelector(".approved-note").textContent = mine
      ? `approved at offset ${fmtOffset(Math.round(mine.offset_s * 10) / 10)}`
      : "";
  }
}

async function approve(eventId, button) {
  // Exactly what a VM sends: POST with the Metadata header and a StartRequests body.
  button.disabled = true;
  button.textContent = "Approving…";
  try {
    const resp = await fetch(imdsPath(view.name), {
      method: "POST",
      headers: { Metadata: "true", "Content-Type": "application/json" },
      body: JSON.stringify({ StartRequests: [{ EventId: eventId }] }),
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(`approval refused (${resp.status}): ${body.error || resp.statusText}`);
    }
    toast(`Approved ${eventId}`);
  } catch (err) {
    toast(err.message, true);
    button.disabled = false;
    button.textContent = "Approve";
  }
}

function eventSummary(doc) {
  const events = doc.Events || [];
  if (events.length === 0) return "no events";
  return events.map((e) => `${e.EventStatus} ${e.EventType} ${e.EventId.slice(0, 8)}`).join("; ");
}

function addHistory(message) {
  const doc = message.document;
  const last = view.history[0];
  const text = JSON.stringify(doc);
  if (last && last.text === text) return; // a reconnect repeats the current document
  view.history.unshift({ at: parseIso(message.at), incarnation: doc.DocumentIncarnation, text, doc });
  view.history.length = Math.min(view.history.length, HISTORY_LIMIT);
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(
    ...view.history.map((h) =>
      el(
        "li",
        { dataset: { incarnation: String(h.incarnation) } },
        el("time", {}, clockTime(h.at - view.skewMs)),
        el("span", { class: "inc" }, `#${h.incarnation}`),
        el("span", {}, eventSummary(h.doc)),
      ),
    ),
  );
  if (view.history.length === 0) list.append(el("li", { class: "empty" }, "Waiting for the stream…"));
}

// ---- the push stream -------------------------------------------------------------------------------

function connect() {
  clearTimeout(view.retryTimer);
  if (view.socket) {
    const old = view.socket;
    view.socket = null;
    old.close();
  }
  const name = view.name;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const auth = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/s/${enc(name)}/stream${auth}`);
  view.socket = socket;
  setConnection("connecting", "connecting…");
  socket.addEventListener("open", () => {
    if (socket !== view.socket) return;
    view.retryMs = 500;
    setConnection("live", "live");
  });
  socket.addEventListener("message", (event) => {
    if (socket !== view.socket) return;
    const message = JSON.parse(event.data);
    addHistory(message);
    showDocument(message.document);
    refreshStatus(); // once per pushed document: the position and the next transition
  });
  socket.addEventListener("close", () => {
    if (socket !== view.socket) return;
    view.socket = null;
    setConnection("offline", "reconnecting…");
    view.retryTimer = setTimeout(() => {
      if (name === view.name) {
        connect();
        refreshStatus();
      }
    }, view.retryMs);
    view.retryMs = Math.min(view.retryMs * 2, 10_000);
  });
}

// ---- live display (extrapolated between pushes; display only) -------------------------------------

function position() {
  const s = view.status;
  if (!s) return 0;
  if (s.state !== "running") return s.position_s;
  const pos = s.position_s + ((performance.now() - view.statusAt) / 1000) * s.speed;
  if (s.loop && s.duration_s > 0) return pos % s.duration_s;
  return Math.min(pos, s.duration_s);
}

function tick() {
  const s = view.status;
  if (!s) return;
  const pos = position();
  const bar = $("timeline");
  const fraction = s.duration_s > 0 ? pos / s.duration_s : 0;
  bar.querySelector(".fill").style.width = `${(100 * fraction).toFixed(2)}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(pos)));
  bar.setAttribute("aria-valuetext", `${fmtOffset(Math.round(pos))} of ${fmtOffset(s.duration_s)}`);
  $("position").textContent = `${pos.toFixed(1)} s`;

  const next = s.next_transition;
  const nextText = $("next-countdown");
  const nextDetail = $("next-detail");
  if (s.trace === IDLE_TRACE) {
    nextText.textContent = "—";
    nextDetail.textContent = "idle: start a replay";
  } else if (!next) {
    nextText.textContent = "none";
    nextDetail.textContent = s.state === "finished" ? "the trace has ended" : "no more changes";
  } else if (next.in_s !== null && s.state === "running") {
    const left = next.in_s - (performance.now() - view.statusAt) / 1000;
    nextText.textContent = left > 0 ? `in ${fmtSeconds(left)}` : "now";
    nextDetail.textContent = `at offset ${fmtOffset(next.offset_s)} · ${clockTime(parseIso(next.at) - view.skewMs)}`;
  } else {
    nextText.textContent = s.state;
    nextDetail.textContent = `at offset ${fmtOffset(next.offset_s)} (${s.state === "waiting" ? "starts at the first IMDS request" : "Step or Resume to reach it"})`;
  }

  const endText = $("end-countdown");
  const endDetail = $("end-detail");
  if (s.trace === IDLE_TRACE) {
    endText.textContent = "—";
    endDetail.textContent = "";
  } else if (s.loop) {
    endText.textContent = "never";
    endDetail.textContent = "looping with fresh EventIds";
  } else if (s.state === "running") {
    endText.textContent = `in ${fmtSeconds((s.duration_s - pos) / s.speed)}`;
    endDetail.textContent = `${fmtOffset(s.duration_s)} of trace at ${fmtSpeed(s.speed)}`;
  } else {
    endText.textContent = s.state === "finished" ? "ended" : s.state;
    endDetail.textContent = `${fmtSeconds((s.duration_s - pos) / s.speed)} of wall time left`;
  }

  const serverNow = Date.now() + view.skewMs;
  for (const span of document.querySelectorAll(".nb-countdown")) {
    if (s.state === "virtual") {
      span.textContent = "virtual time";
      continue;
    }
    const left = (Number(span.dataset.notBefore) - serverNow) / 1000;
    span.textContent = left > 0 ? `in ${fmtSeconds(left)}` : `passed ${fmtSeconds(-left)} ago`;
    span.dataset.passed = String(left <= 0);
  }
}

// ---- sessions, traces and the start form -----------------------------------------------------------

async function refreshSessions() {
  try {
    const sessions = await api("GET", "/replay/sessions");
    const picker = $("session-picker");
    const names = sessions.map((s) => s.name);
    picker.replaceChildren(
      ...sessions.map((s) =>
        el("option", { value: s.name }, `${s.name} — ${s.trace === IDLE_TRACE ? "idle" : `${s.trace} (${s.state})`}`),
      ),
    );
    if (view.name && names.includes(view.name)) picker.value = view.name;
  } catch (err) {
    toast(err.message, true);
  }
}

async function loadTraces() {
  try {
    view.traces = await api("GET", "/replay/traces");
  } catch (err) {
    toast(err.message, true);
    return;
  }
  const select = $("start-trace");
  select.replaceChildren(
    ...view.traces.map((t) => el("option", { value: t.name }, `${t.name} (${fmtSeconds(t.duration_s)})`)),
  );
  const rows = view.traces.map((t) => {
    const use = el("button", { type: "button", class: "small", "aria-label": `Use trace ${t.name}` }, "Use");
    use.addEventListener("click", () => {
      view.traceChosen = true;
      select.value = t.name;
      select.focus();
    });
    return el(
      "tr",
      { dataset: { trace: t.name } },
      el(
        "td",
        {},
        el("span", { class: "trace-name" }, t.name),
        el("span", { class: "scenario" }, `${t.scenario} · ${t.origin} · ${t.events} event${t.events === 1 ? "" : "s"}`),
      ),
      el("td", { class: "num" }, fmtSeconds(t.duration_s)),
      el("td", {}, use),
    );
  });
  $("traces").replaceChildren(...rows);
  if (rows.length === 0) {
    $("traces").append(el("tr", {}, el("td", { colSpan: 3, class: "empty" }, "No traces in the dataset.")));
  }
  followTrace();
}

/** Preselect the shown session's trace in the start form, until the user picks one. */
function followTrace() {
  const trace = view.status && view.status.trace;
  if (!view.traceChosen && view.traces.some((t) => t.name === trace)) $("start-trace").value = trace;
}

async function startSession(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const data = new FormData(form);
  let speed = data.get("speed");
  if (speed === "custom") {
    speed = String(data.get("speed_custom") || "").trim();
    if (!speed) {
      toast("type a custom speed, e.g. 300 or 300x", true);
      $("start-speed-custom").focus();
      return;
    }
  } else if (speed === "1") {
    speed = 1;
  }
  const body = {
    name: String(data.get("name")).trim() || DEFAULT,
    trace: data.get("trace"),
    speed,
    loop: data.get("loop") === "on",
    start: data.get("start"),
  };
  const resources = String(data.get("resources") || "")
    .split(",")
    .map((r) => r.trim())
    .filter(Boolean);
  if (resources.length) body.resources = resources;
  const submit = $("start-submit");
  submit.disabled = true;
  try {
    const status = await api("POST", "/replay/sessions", body);
    toast(`Started ${status.trace} as '${status.name}' at ${fmtSpeed(status.speed)}`);
    await refreshSessions();
    if (status.name === view.name) {
      applyStatus(status); // same name: the stream carries on with the new session
    } else {
      selectSession(status.name);
    }
  } catch (err) {
    toast(err.message, true);
  } finally {
    submit.disabled = false;
  }
}

async function control(action, body) {
  const name = view.name;
  try {
    const status = await api("POST", `${sessionPath(name)}/${action}`, body);
    if (name === view.name) applyStatus(status);
    return true;
  } catch (err) {
    toast(err.message, true);
    return false;
  }
}

function showFaults(faults) {
  const injected = faults ? Object.values(faults.injected).reduce((a, b) => a + b, 0) : 0;
  $("faults-count").textContent = faults && (faults.windows || injected)
    ? `${faults.windows} window(s), ${injected} injected`
    : "none";
}

async function loadFaults(event) {
  event.preventDefault();
  let playbook;
  try {
    playbook = JSON.parse($("faults-playbook").value);
  } catch (err) {
    toast(`The playbook is not JSON: ${err.message}`, true);
    return;
  }
  await faultsCall("PUT", playbook, "Fault playbook loaded");
}

async function clearFaults() {
  await faultsCall("DELETE", undefined, "Fault playbook removed");
}

async function faultsCall(method, body, done) {
  const name = view.name;
  try {
    const status = await api(method, `${sessionPath(name)}/faults`, body);
    if (name === view.name) applyStatus(status);
    toast(done);
  } catch (err) {
    toast(err.message, true);
  }
}

async function stopSession() {
  const name = view.name;
  try {
    await api("DELETE", sessionPath(name));
  } catch (err) {
    toast(err.message, true);
    return;
  }
  toast(name === DEFAULT ? `Stopped '${name}': it is idle now` : `Stopped and removed '${name}'`);
  await refreshSessions();
  if (name === DEFAULT) refreshStatus();
  else selectSession(DEFAULT);
}

function sessionFromHash() {
  const match = /^#session=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : DEFAULT;
}

function wire() {
  const picker = $("session-picker");
  picker.addEventListener("change", () => selectSession(picker.value));
  // The list changes when anyone starts or stops a session: refresh it when the user looks.
  picker.addEventListener("focus", refreshSessions);
  picker.addEventListener("pointerdown", refreshSessions);
  window.addEventListener("hashchange", () => selectSession(sessionFromHash()));

  $("pause").addEventListener("click", () => control("pause"));
  $("resume").addEventListener("click", () => control("resume"));
  $("step").addEventListener("click", () => control("step"));
  $("stop").addEventListener("click", stopSession);
  $("seek-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const offset = Number($("seek-offset").value);
    if (await control("seek", { offset_s: offset })) toast(`Moved to offset ${fmtOffset(offset)}`);
  });
  $("speed-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("speed-change");
    const speed = input.value.trim();
    if (await control("speed", { speed })) {
      input.value = "";
      toast(`Speed set to ${fmtSpeed(view.status.speed)}`);
    }
  });
  $("faults-form").addEventListener("submit", loadFaults);
  $("faults-clear").addEventListener("click", clearFaults);
  $("start-form").addEventListener("submit", startSession);
  $("start-name").addEventListener("input", () => {
    view.nameEdited = true;
  });
  $("start-trace").addEventListener("change", () => {
    view.traceChosen = true;
  });
  $("start-speed-custom").addEventListener("input", () => {
    $("speed-custom").checked = true;
  });
  $("toast").addEventListener("click", () => {
    $("toast").hidden = true;
  });
  setInterval(tick, 100); // display only: countdowns and the timeline between pushes
}

async function main() {
  wire();
  renderHistory();
  await refreshSessions();
  selectSession(sessionFromHash());
  await loadTraces();
}

main();
