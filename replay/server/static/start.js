// The side panel: the traces in the dataset and the form that starts a replay of one.

import { api, DEFAULT } from "./api.js";
import { followTrace } from "./display.js";
import { $, el, toast } from "./dom.js";
import { fmtSeconds, fmtSpeed } from "./format.js";
import { applyStatus, refreshSessions, selectSession } from "./session.js";
import { view } from "./state.js";

function traceRow(trace, select) {
  const use = el("button", { type: "button", class: "small", "aria-label": `Use trace ${trace.name}` }, "Use");
  use.addEventListener("click", () => {
    view.traceChosen = true;
    select.value = trace.name;
    select.focus();
  });
  const events = `${trace.events} event${trace.events === 1 ? "" : "s"}`;
  return el(
    "tr",
    { dataset: { trace: trace.name } },
    el(
      "td",
      {},
      el("span", { class: "trace-name" }, trace.name),
      el("span", { class: "scenario" }, `${trace.scenario} · ${trace.origin} · ${events}`),
    ),
    el("td", { class: "num" }, fmtSeconds(trace.duration_s)),
    el("td", {}, use),
  );
}

export async function loadTraces() {
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
  const rows = view.traces.map((t) => traceRow(t, select));
  $("traces").replaceChildren(...rows);
  if (rows.length === 0) {
    $("traces").append(el("tr", {}, el("td", { colSpan: 3, class: "empty" }, "No traces in the dataset.")));
  }
  followTrace();
}

/** The body of POST /replay/sessions from the start form, or null (and a message) if incomplete. */
function startBody(form) {
  const data = new FormData(form);
  let speed = data.get("speed");
  if (speed === "custom") {
    speed = String(data.get("speed_custom") || "").trim();
    if (!speed) {
      toast("type a custom speed, e.g. 300 or 300x", true);
      $("start-speed-custom").focus();
      return null;
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
  return body;
}

export async function startSession(event) {
  event.preventDefault();
  const body = startBody(event.currentTarget);
  if (body === null) return;
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

/** Wire the start form and the trace list. */
export function wireStart() {
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
}
