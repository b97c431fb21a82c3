// The control page: watch and drive one replay session at a time.
//
// Documents arrive pushed over the session's WebSocket (stream.js). Each push triggers one GET
// of the session status (session.js); between statuses the timeline and the countdowns move on
// from the server's numbers for display only (clock.js, display.js). Nothing polls the server
// on a timer. No build step: the browser loads these ES modules as they are.

import { tick } from "./display.js";
import { $ } from "./dom.js";
import { wireControls } from "./controls.js";
import { resetDocuments } from "./documents.js";
import { refreshSessions, selectSession, sessionFromHash } from "./session.js";
import { loadTraces, wireStart } from "./start.js";

function wire() {
  const picker = $("session-picker");
  picker.addEventListener("change", () => selectSession(picker.value));
  // The list changes when anyone starts or stops a session: refresh it when the user looks.
  picker.addEventListener("focus", refreshSessions);
  picker.addEventListener("pointerdown", refreshSessions);
  window.addEventListener("hashchange", () => selectSession(sessionFromHash()));
  wireControls();
  wireStart();
  $("toast").addEventListener("click", () => {
    $("toast").hidden = true;
  });
  setInterval(tick, 100); // display only: countdowns and the timeline between statuses
}

async function main() {
  wire();
  resetDocuments();
  await refreshSessions();
  selectSession(sessionFromHash());
  await loadTraces();
}

main();
