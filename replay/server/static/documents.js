// The documents: the current one as the VM sees it, its events as cards (with Approve), and
// the history of documents pushed since the session was shown.

import { approveEvent } from "./api.js";
import { localMs, serverNowMs } from "./clock.js";
import { $, el, toast } from "./dom.js";
import { clockTime, fmtOffset, fmtSeconds, highlightJson, parseIso } from "./format.js";
import { view } from "./state.js";

const HISTORY_LIMIT = 50;

/** Forget the documents of the session shown before. */
export function resetDocuments() {
  view.doc = null;
  view.docText = "";
  view.history = [];
  renderHistory();
}

export function showDocument(doc) {
  const text = JSON.stringify(doc, null, 2);
  if (text === view.docText) return;
  view.doc = doc;
  view.docText = text;
  $("document").innerHTML = highlightJson(text);
  renderEvents();
}

function eventCard(event) {
  const status = event.EventStatus;
  const notBefore = event.NotBefore ? Date.parse(event.NotBefore) : NaN;
  const facts = el(
    "dl",
    { class: "facts" },
    el("dt", {}, "Type"),
    el("dd", {}, event.EventType ?? "—"),
    el("dt", {}, "Resources"),
    el("dd", {}, `${event.ResourceType ?? ""} ${(event.Resources || []).join(", ")}`.trim() || "—"),
    el("dt", {}, "Source"),
    el("dd", {}, event.EventSource ?? "—"),
    el("dt", {}, "NotBefore"),
    el(
      "dd",
      {},
      event.NotBefore || "— (none: the event is under way)",
      Number.isFinite(notBefore)
        ? el("span", { class: "nb-countdown", dataset: { notBefore: String(notBefore) } })
        : null,
    ),
  );
  if (event.DurationInSeconds !== undefined && event.DurationInSeconds !== -1) {
    facts.append(el("dt", {}, "Duration"), el("dd", {}, fmtSeconds(event.DurationInSeconds)));
  }
  const card = el(
    "li",
    { class: "event", dataset: { eventId: event.EventId, status } },
    el(
      "div",
      { class: "event-head" },
      el("code", { class: "event-id" }, event.EventId),
      el("span", { class: "badge status", dataset: { status } }, status),
    ),
    facts,
  );
  if (event.Description) card.append(el("p", { class: "description" }, event.Description));
  const actions = el("div", { class: "event-actions" }, el("span", { class: "approved-note" }));
  if (status === "Scheduled") {
    const button = el(
      "button",
      { type: "button", class: "approve primary", "aria-label": `Approve event ${event.EventId}` },
      "Approve",
    );
    button.addEventListener("click", () => approve(event.EventId, button));
    actions.append(button);
  }
  card.append(actions);
  return card;
}

function renderEvents() {
  const list = $("events");
  list.replaceChildren();
  const events = (view.doc && view.doc.Events) || [];
  if (events.length === 0) {
    list.append(el("li", { class: "empty" }, "No events in the current document."));
    return;
  }
  list.append(...events.map(eventCard));
  markApprovals();
  showNotBefore();
}

/** Note on each card whether (and at which offset) this session approved it. */
export function markApprovals() {
  const approvals = (view.status && view.status.approvals) || [];
  for (const card of $("events").querySelectorAll(".event")) {
    const mine = approvals.find((a) => a.event_id === card.dataset.eventId);
    card.querySelector(".approved-note").textContent = mine
      ? `approved at offset ${fmtOffset(Math.round(mine.offset_s * 10) / 10)}`
      : "";
  }
}

/** Count down to each NotBefore on the server's wall clock (or say time is virtual). */
export function showNotBefore() {
  const virtual = view.status && view.status.state === "virtual";
  const serverNow = serverNowMs();
  for (const span of document.querySelectorAll(".nb-countdown")) {
    if (virtual) {
      span.textContent = "virtual time";
      continue;
    }
    const left = (Number(span.dataset.notBefore) - serverNow) / 1000;
    span.textContent = left > 0 ? `in ${fmtSeconds(left)}` : `passed ${fmtSeconds(-left)} ago`;
    span.dataset.passed = String(left <= 0);
  }
}

async function approve(eventId, button) {
  button.disabled = true;
  button.textContent = "Approving…";
  try {
    await approveEvent(view.name, eventId);
    toast(`Approved ${eventId}`);
  } catch (err) {
    toast(err.message, true);
    button.disabled = false;
    button.textContent = "Approve";
  }
}

function eventSummary(doc) {
  const events = doc.Events || [];
  if (events.length === 0) return "no events";
  return events.map((e) => `${e.EventStatus} ${e.EventType} ${e.EventId.slice(0, 8)}`).join("; ");
}

/** A pushed message ({document, at}) joins the history unless it repeats the last one. */
export function addHistory(message) {
  const doc = message.document;
  const last = view.history[0];
  const text = JSON.stringify(doc);
  if (last && last.text === text) return; // a reconnect repeats the current document
  view.history.unshift({ at: parseIso(message.at), incarnation: doc.DocumentIncarnation, text, doc });
  view.history.length = Math.min(view.history.length, HISTORY_LIMIT);
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(
    ...view.history.map((h) =>
      el(
        "li",
        { dataset: { incarnation: String(h.incarnation) } },
        el("time", {}, clockTime(localMs(h.at))),
        el("span", { class: "inc" }, `#${h.incarnation}`),
        el("span", {}, eventSummary(h.doc)),
      ),
    ),
  );
  if (view.history.length === 0) list.append(el("li", { class: "empty" }, "Waiting for the stream…"));
}
