// Text for people: durations, offsets, speeds, clock times and highlighted JSON.

export function pad(n) {
  return String(n).padStart(2, "0");
}

/** Seconds as "14.9 s", "25m 30s" or "2h 05m". */
export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  const sign = s < 0 ? "-" : "";
  const a = Math.abs(s);
  if (a < 60) return `${sign}${a.toFixed(1)} s`;
  if (a < 3600) return `${sign}${Math.floor(a / 60)}m ${pad(Math.floor(a % 60))}s`;
  return `${sign}${Math.floor(a / 3600)}h ${pad(Math.floor((a % 3600) / 60))}m`;
}

/** A trace offset as "930 s" or "28.4 s". */
export function fmtOffset(s) {
  if (!Number.isFinite(s)) return "—";
  return Number.isInteger(s) ? `${s} s` : `${s.toFixed(1)} s`;
}

export function fmtSpeed(speed) {
  return `${Number(speed.toPrecision(6))}x`;
}

/** Milliseconds since the epoch of a Python isoformat (which has microseconds). */
export function parseIso(text) {
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

/** Milliseconds since the epoch as this browser's local "HH:MM:SS". */
export function clockTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** JSON text as HTML with keys, strings, numbers and literals in spans (escaped first). */
export function highlightJson(text) {
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
