// The push stream: the shown session's WebSocket (/s/{name}/stream), reconnected with backoff.
// Each message is {document, at}: a new current document and the server wall time it became so.

import { streamUrl } from "./api.js";
import { setConnection } from "./dom.js";

let socket = null;
let retryMs = 500;
let retryTimer = null;

/**
 * Follow the stream of session `name` (closing any other): onMessage(message) for each push,
 * onReconnect() after the connection came back (documents may have been missed meanwhile).
 */
export function connect(name, { onMessage, onReconnect }) {
  clearTimeout(retryTimer);
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  const mine = new WebSocket(streamUrl(name));
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
      connect(name, { onMessage, onReconnect });
      onReconnect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 10_000);
  });
}
