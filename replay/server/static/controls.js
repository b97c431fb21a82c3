// The session controls: pause, resume, step, seek, speed, stop and the fault playbook.
// Each answer is the session's new status, shown at once.

import { api, DEFAULT, sessionPath } from "./api.js";
import { $, toast } from "./dom.js";
import { fmtOffset, fmtSpeed } from "./format.js";
import { applyStatus, refreshSessions, refreshStatus, selectSession } from "./session.js";
import { view } from "./state.js";

/** A control call on the shown session; true when the server took it. */
async function control(method, action, body) {
  const name = view.name;
  try {
    const status = await api(method, `${sessionPath(name)}/${action}`, body);
    if (name === view.name) applyStatus(status);
    return true;
  } catch (err) {
    toast(err.message, true);
    return false;
  }
}

async function seek(event) {
  event.preventDefault();
  const offset = Number($("seek-offset").value);
  if (await control("POST", "seek", { offset_s: offset })) toast(`Moved to offset ${fmtOffset(offset)}`);
}

async function setSpeed(event) {
  event.preventDefault();
  const input = $("speed-change");
  if (await control("POST", "speed", { speed: input.value.trim() })) {
    input.value = "";
    toast(`Speed set to ${fmtSpeed(view.status.speed)}`);
  }
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
  if (await control("PUT", "faults", playbook)) toast("Fault playbook loaded");
}

async function clearFaults() {
  if (await control("DELETE", "faults")) toast("Fault playbook removed");
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

/** Wire the session panel's buttons and forms. */
export function wireControls() {
  $("pause").addEventListener("click", () => control("POST", "pause"));
  $("resume").addEventListener("click", () => control("POST", "resume"));
  $("step").addEventListener("click", () => control("POST", "step"));
  $("stop").addEventListener("click", stopSession);
  $("seek-form").addEventListener("submit", seek);
  $("speed-form").addEventListener("submit", setSpeed);
  $("faults-form").addEventListener("submit", loadFaults);
  $("faults-clear").addEventListener("click", clearFaults);
}
