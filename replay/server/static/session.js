// The session shown: choosing it, its status (re-read after every pushed document) and the
// list of sessions in the picker.

import { api, DEFAULT, enc, IDLE_TRACE, imdsPath, sessionPath, streamUrl } from "./api.js";
import { resync } from "./clock.js";
import { renderStatus } from "./display.js";
import { addHistory, resetDocuments, showDocument } from "./documents.js";
import { $, el, toast } from "./dom.js";
import { connect } from "./stream.js";
import { view } from "./state.js";

export function sessionFromHash() {
  const match = /^#session=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : DEFAULT;
}

export function selectSession(name) {
  if (name === view.name) return;
  view.name = name;
  view.status = null;
  resetDocuments();
  const hash = name === DEFAULT ? "" : `#session=${enc(name)}`;
  if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${hash}`);
  const picker = $("session-picker");
  if ([...picker.options].some((o) => o.value === name)) picker.value = name;
  else refreshSessions(); // started elsewhere since the list was read
  $("session-title").textContent = name;
  if (!view.nameEdited) $("start-name").value = name; // Start replaces what is shown
  $("session-endpoint").textContent = imdsPath(name);
  connect(streamUrl(name), { onMessage: pushed, onReconnect: refreshStatus });
  refreshStatus();
}

function pushed(message) {
  addHistory(message);
  showDocument(message.document);
  refreshStatus(); // once per pushed document: the position and the next transition
}

/** Read the shown session's status again; a session gone meanwhile falls back to default. */
export async function refreshStatus() {
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

/** Show a fresh status of the shown session (from a refresh or a control call's answer). */
export function applyStatus(status) {
  view.statusSeq += 1; // an older status still on its way must not overwrite this one
  view.status = status;
  resync(status);
  showDocument(status.document);
  renderStatus();
}

export async function refreshSessions() {
  try {
    const sessions = await api("GET", "/replay/sessions");
    const picker = $("session-picker");
    const label = (s) => `${s.name} — ${s.trace === IDLE_TRACE ? "idle" : `${s.trace} (${s.state})`}`;
    picker.replaceChildren(...sessions.map((s) => el("option", { value: s.name }, label(s))));
    if (view.name && sessions.some((s) => s.name === view.name)) picker.value = view.name;
  } catch (err) {
    toast(err.message, true);
  }
}
