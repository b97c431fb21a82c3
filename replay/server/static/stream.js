// A push stream: one WebSocket (the shown session's /s/{name}/stream, or the fleet page's
// /fleet/stream), reconnected with backoff; the connection badge says how it is.

import { setConnection } from "./dom.js";

let socket = null;
let retryMs = 500;
let retryTimer = null;

/**
 * Follow the stream at `url` (closing any other): onMessage(message) for each push,
 * onReconnect() after the connection came back (messages may have been missed meanwhile).
 */
export function connect(url, { onMessage, onReconnect }) {
  clearTimeout(retryTimer);
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  const mine = new WebSocket(url);
  socket = mine;
  setConnection("connecting", "connecting…");
  mine.addEventListener("open", () => {
    if (mine !== socket) return;
    retryMs = 500;
    setConnection("live", "live");
  });
  mine.addEventListener("message", (event) => {
    if (mine !== socket) return;
    onMessage(JSON.parse(event.data));
  });
  mine.addEventListener("close", () => {
    if (mine !== socket) return;
    socket = null;
    setConnection("offline", "reconnecting…");
    retryTimer = setTimeout(() => {
      connect(url, { onMessage, onReconnect });
      onReconnect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 10_000);
  });
}
