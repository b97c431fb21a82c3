// Talking to the server: the control API (JSON in and out), the IMDS endpoint a VM polls, and
// push streams (a session's; the fleet page's too). Every request goes to this page's own origin; every body is JSON.

export const IMDS_VERSION = "2020-07-01";
export const DEFAULT = "default"; // the session the server always has
export const IDLE_TRACE = "(idle)"; // what an idle session replays

// A server bound beyond loopback needs its token: open the page as /?token=TOKEN.
const TOKEN = new URLSearchParams(location.search).get("token");

export const enc = encodeURIComponent;
export const sessionPath = (name) => `/replay/sessions/${enc(name)}`;

/** The IMDS path a VM polls for this session. */
export function imdsPath(name) {
  const prefix = name === DEFAULT ? "" : `/s/${enc(name)}`;
  return `${prefix}/metadata/scheduledevents?api-version=${IMDS_VERSION}`;
}

/** The WebSocket URL of a path of this server (with the token, when the page has one). */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const auth = TOKEN ? `?token=${enc(TOKEN)}` : "";
  return `${scheme}://${location.host}${path}${auth}`;
}

/** The WebSocket URL of a session's push stream. */
export const streamUrl = (name) => socketUrl(`/s/${enc(name)}/stream`);

/** A request to this page's own server; a body goes as JSON (the server refuses others). */
function request(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, mode: "same-origin", credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

/** A control API call: the parsed JSON answer, or an Error carrying the server's message. */
export async function api(method, path, body) {
  const resp = await request(method, path, body, TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {});
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

/** Approve an event exactly as a VM does: POST StartRequests with the Metadata header. */
export async function approveEvent(name, eventId) {
  const body = { StartRequests: [{ EventId: eventId }] };
  const resp = await request("POST", imdsPath(name), body, { Metadata: "true" });
  if (!resp.ok) {
    const answer = await resp.json().catch(() => ({}));
    throw new Error(`approval refused (${resp.status}): ${answer.error || resp.statusText}`);
  }
}
