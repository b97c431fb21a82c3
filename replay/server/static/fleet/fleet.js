// The fleet page: every group's VMs in a grid by fault domain, the group's shared events, and
// Approve as any chosen VM.
//
// The page follows the whole fleet's stream (/fleet/stream: a message whenever any VM's
// document changes, the fleet's anchor moves, or the fleet goes or comes) and reads
// GET /replay/fleet when one arrives, and after each action. Nothing polls on a timer. The
// request, element and stream helpers are the session page's modules.

import { api, enc, socketUrl } from "../api.js";
import { $, el } from "../dom.js";
import { connect } from "../stream.js";

let fetching = null;
let again = false;

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.dataset.error = isError ? "true" : "false";
}

// ---- rendering ---------------------------------------------------------------------------------

function vmCell(vm) {
  const mine = vm.events.filter((e) => e.affects);
  const state = mine.length ? mine[0].status : vm.events.length ? "watching" : "idle";
  const cell = el(
    "li",
    { class: "vm", dataset: { vm: vm.name, state } },
    el("span", { class: "vm-name" }, vm.name),
    el("span", { class: "vm-state" }, state),
    el("span", { class: "vm-meta" }, `#${vm.incarnation} · ${vm.address}`),
  );
  cell.title = `${vm.name}: ${vm.polls} polls, incarnation ${vm.incarnation}`;
  return cell;
}

function eventRow(event, vms) {
  const chooser = el("select", { class: "approve-as", "aria-label": `Approve ${event.EventId} as` });
  for (const vm of vms) chooser.append(el("option", { value: vm.name }, vm.name));
  const approve = el("button", { type: "button", class: "approve small" }, "Approve");
  approve.disabled = event.EventStatus !== "Scheduled";
  approve.addEventListener("click", () =>
    act(`approved ${event.EventId} as ${chooser.value}`, () =>
      api("POST", `/replay/fleet/vms/${enc(chooser.value)}/approve`, { event_ids: [event.EventId] }),
    ),
  );
  const status = event.EventStatus;
  return el(
    "tr",
    { class: "event", dataset: { event: event.EventId, status } },
    el("td", {}, el("code", {}, event.EventId)),
    el("td", {}, event.EventType),
    el("td", {}, el("span", { class: "badge status", dataset: { status } }, status)),
    el("td", {}, event.Resources.join(", ")),
    el("td", {}, event.NotBefore || "—"),
    el("td", {}, el("label", { class: "meta" }, "as ", chooser), " ", approve),
  );
}

function groupSection(group, vms) {
  const domains = el("div", { class: "domains" });
  for (const domain of group.fault_domains) {
    const names = new Set(domain.vms);
    const label = domain.fault_domain === null ? "all VMs" : `fault domain ${domain.fault_domain}`;
    domains.append(
      el(
        "div",
        { class: "domain", dataset: { faultDomain: String(domain.fault_domain) } },
        el("h3", {}, label),
        el("ul", { class: "vms" }, ...vms.filter((vm) => names.has(vm.name)).map(vmCell)),
      ),
    );
  }
  const heads = ["EventId", "Type", "Status", "Resources", "NotBefore", ""];
  const events = group.events;
  const table = el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "traces fleet-events" },
      el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...events.map((e) => eventRow(e, vms))),
    ),
  );
  return el(
    "section",
    { class: "panel group", dataset: { group: group.name } },
    el(
      "h2",
      {},
      `${group.name} `,
      el("span", { class: "meta" }, `${group.trace}, ${group.rollout}, incarnation ${group.incarnation}`),
    ),
    domains,
    events.length ? table : el("p", { class: "empty" }, "No events now."),
  );
}

function render(fleet) {
  $("empty").hidden = true;
  $("fleet-name").textContent = fleet.name;
  const state = $("fleet-state");
  state.textContent = fleet.state;
  state.dataset.state = fleet.state;
  $("fleet-position").textContent =
    `${fleet.position_s.toFixed(1)} / ${fleet.duration_s} s · round ${fleet.round} · ${fleet.speed}x`;
  const byGroup = new Map(fleet.groups.map((g) => [g.name, []]));
  for (const vm of fleet.vms) byGroup.get(vm.group)?.push(vm);
  $("groups").replaceChildren(...fleet.groups.map((g) => groupSection(g, byGroup.get(g.name))));
  $("approvals").replaceChildren(
    ...fleet.approvals.map((a) =>
      el("li", {}, `${a.vm} approved ${a.event_id} (${a.group}, ${a.offset_s.toFixed(1)} s)`),
    ),
  );
}

function showNoFleet() {
  $("groups").replaceChildren();
  $("approvals").replaceChildren();
  $("fleet-name").textContent = "";
  $("fleet-position").textContent = "";
  $("fleet-state").textContent = "no fleet";
  $("fleet-state").dataset.state = "";
  $("empty").hidden = false;
}

// ---- updates -----------------------------------------------------------------------------------

/** Read the fleet's status again (one request at a time; a call meanwhile asks for one more). */
async function refresh() {
  if (fetching) {
    again = true;
    return fetching;
  }
  fetching = (async () => {
    do {
      again = false;
      try {
        render(await api("GET", "/replay/fleet"));
      } catch (error) {
        showNoFleet();
        if (error.status !== 404) say(String(error.message), true);
      }
    } while (again);
    fetching = null;
  })();
  return fetching;
}

function pushed(message) {
  if (message.fleet === null) showNoFleet();
  else refresh(); // the message says what changed; the status has every VM's counts too
}

async function act(done, call) {
  try {
    await call();
    say(done);
  } catch (error) {
    say(String(error.message), true);
  }
  await refresh();
}

$("pause").addEventListener("click", () => act("paused", () => api("POST", "/replay/fleet/pause")));
$("resume").addEventListener("click", () => act("resumed", () => api("POST", "/replay/fleet/resume")));
$("step").addEventListener("click", () => act("stepped", () => api("POST", "/replay/fleet/step")));
$("speed-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(`speed ${$("speed").value}`, () => api("POST", "/replay/fleet/speed", { speed: $("speed").value }));
});

connect(socketUrl("/fleet/stream"), { onMessage: pushed, onReconnect: refresh });
