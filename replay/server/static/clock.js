// The replay's clock between two status refreshes, moved on from the numbers the server sent.
//
// A status (GET /replay/sessions/{name}, or the answer to a control call) says where the replay
// is (`position_s` in round `round`), whether trace time moves (`state` "running"), how fast
// (`speed`, trace seconds per wall second), where it ends (`duration_s`, `loop`), how long to
// the next transition (`next_transition.in_s`) and the server's wall clock when it was computed
// (`computed_at`). The page re-syncs at each status (one arrives after every pushed document)
// and moves on from the last one for display only; it never works out the replay by itself.

import { parseIso } from "./format.js";

let syncedAt = performance.now(); // when the last status arrived (this page's monotonic clock)
let skewMs = 0; // the server's wall clock minus this browser's, from that status

/** Take a fresh status as the new starting point. */
export function resync(status) {
  syncedAt = performance.now();
  if (status.computed_at) skewMs = parseIso(status.computed_at) - Date.now();
}

/** Wall seconds since the last status arrived. */
export function elapsedS() {
  return (performance.now() - syncedAt) / 1000;
}

/**
 * Where the replay of `status` is `elapsed` wall seconds later: {round, offset_s}.
 * `position_s + elapsed * speed` while running, held otherwise; capped at the end unless
 * looping, where it wraps into the following rounds.
 */
export function extrapolate(status, elapsed) {
  if (status.state !== "running") return { round: status.round, offset_s: status.position_s };
  const pos = status.position_s + elapsed * status.speed;
  const duration = status.duration_s;
  if (status.loop && duration > 0) {
    return { round: status.round + Math.floor(pos / duration), offset_s: pos % duration };
  }
  return { round: status.round, offset_s: Math.min(pos, duration) };
}

/** Wall seconds to the next transition `elapsed` seconds after `status`; null unless running. */
export function nextIn(status, elapsed) {
  const next = status.next_transition;
  if (!next || next.in_s === null || status.state !== "running") return null;
  return next.in_s - elapsed;
}

/** Where the shown session's replay is now, from its last status. */
export function now(status) {
  return extrapolate(status, elapsedS());
}

/** The server's wall clock now, in milliseconds since the epoch. */
export function serverNowMs() {
  return Date.now() + skewMs;
}

/** A server wall time (milliseconds since the epoch) on this browser's clock. */
export function localMs(serverMs) {
  return serverMs - skewMs;
}
