// The session panel: its state, the timeline, the countdowns and which controls apply.
// renderStatus() draws a fresh status; tick() moves the live parts on between statuses.

import { IDLE_TRACE } from "./api.js";
import { elapsedS, localMs, nextIn, now } from "./clock.js";
import { markApprovals, showNotBefore } from "./documents.js";
import { $ } from "./dom.js";
import { clockTime, fmtOffset, fmtSeconds, fmtSpeed, parseIso } from "./format.js";
import { view } from "./state.js";

function describe(s) {
  const trace = s.scenario === s.trace ? s.trace : `${s.trace} (${s.scenario})`;
  return [trace, s.origin, fmtSpeed(s.speed), s.loop ? "looping" : null].filter(Boolean).join(" · ");
}

export function renderStatus() {
  const s = view.status;
  if (!s) return;
  const idle = s.trace === IDLE_TRACE;
  const stateBadge = $("session-state");
  stateBadge.textContent = idle ? "idle" : s.state;
  stateBadge.dataset.state = idle ? "idle" : s.state;
  $("session-meta").textContent = idle ? "no trace: start one" : describe(s);
  $("duration").textContent = idle
    ? ""
    : `of ${fmtOffset(s.duration_s)} (${fmtSeconds(s.wall_duration_s)} at ${fmtSpeed(s.speed)})`;
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
  showFaults(s.faults);
  followTrace();
  markApprovals();
  tick();
}

function showFaults(faults) {
  const injected = faults ? Object.values(faults.injected).reduce((a, b) => a + b, 0) : 0;
  $("faults-count").textContent =
    faults && (faults.windows || injected) ? `${faults.windows} window(s), ${injected} injected` : "none";
}

/** Preselect the shown session's trace in the start form, until the user picks one. */
export function followTrace() {
  const trace = view.status && view.status.trace;
  if (!view.traceChosen && view.traces.some((t) => t.name === trace)) $("start-trace").value = trace;
}

function showNext(s) {
  const text = $("next-countdown");
  const detail = $("next-detail");
  const next = s.next_transition;
  const left = nextIn(s, elapsedS());
  if (s.trace === IDLE_TRACE) {
    text.textContent = "—";
    detail.textContent = "idle: start a replay";
  } else if (!next) {
    text.textContent = "none";
    detail.textContent = s.state === "finished" ? "the trace has ended" : "no more changes";
  } else if (left !== null) {
    text.textContent = left > 0 ? `in ${fmtSeconds(left)}` : "now";
    detail.textContent = `at offset ${fmtOffset(next.offset_s)} · ${clockTime(localMs(parseIso(next.at)))}`;
  } else {
    const how = s.state === "waiting" ? "starts at the first IMDS request" : "Step or Resume to reach it";
    text.textContent = s.state;
    detail.textContent = `at offset ${fmtOffset(next.offset_s)} (${how})`;
  }
}

function showEnd(s, offset) {
  const text = $("end-countdown");
  const detail = $("end-detail");
  const wallLeft = (s.duration_s - offset) / s.speed;
  if (s.trace === IDLE_TRACE) {
    text.textContent = "—";
    detail.textContent = "";
  } else if (s.loop) {
    text.textContent = "never";
    detail.textContent = "looping with fresh EventIds";
  } else if (s.state === "running") {
    text.textContent = `in ${fmtSeconds(wallLeft)}`;
    detail.textContent = `${fmtOffset(s.duration_s)} of trace at ${fmtSpeed(s.speed)}`;
  } else {
    text.textContent = s.state === "finished" ? "ended" : s.state;
    detail.textContent = `${fmtSeconds(wallLeft)} of wall time left`;
  }
}

/** The live parts: timeline, position, round and countdowns (display only; 10 times a second). */
export function tick() {
  const s = view.status;
  if (!s) return;
  const { round, offset_s: pos } = now(s);
  const bar = $("timeline");
  const fraction = s.duration_s > 0 ? pos / s.duration_s : 0;
  bar.querySelector(".fill").style.width = `${(100 * fraction).toFixed(2)}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(pos)));
  bar.setAttribute("aria-valuetext", `${fmtOffset(Math.round(pos))} of ${fmtOffset(s.duration_s)}`);
  $("position").textContent = `${pos.toFixed(1)} s`;
  $("round").textContent = s.loop ? `round ${round + 1}` : "";
  showNext(s);
  showEnd(s, pos);
  showNotBefore();
}
