// Small DOM helpers and the page-wide messages: the toast and the connection badge.

export const $ = (id) => document.getElementById(id);

/** A new element with properties (class, dataset, aria-*, role, or any DOM property) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

let toastTimer = null;

export function toast(message, isError = false) {
  const box = $("toast");
  box.textContent = message;
  box.dataset.kind = isError ? "error" : "info";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(
    () => {
      box.hidden = true;
    },
    isError ? 8000 : 3500,
  );
}

export function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text;
}
