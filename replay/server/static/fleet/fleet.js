// The fleet page: every group's VMs in a grid by fault domain, the group's shared events, and
// Approve as any chosen VM.
//
// The page listens to one WebSocket per group (its first VM's /vm/{name}/stream: every VM of a
// group sees the group's document) and fetches GET /replay/fleet when one says something
// changed, and after each action. Nothing polls on a timer.

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token");
const enc = encodeURIComponent;
const sockets = new Map(); // group name -> WebSocket
let fetching = null;
let again = false;

async function api(method, path, body) {
  const init = { method, headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const value = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = value && value.error;
    throw new Error((err && err.message) || `${method} ${path} answered ${resp.status}`);
  }
  return value;
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.dataset.error = isError ? "true" : "false";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.includes("-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// ---- rendering ---------------------------------------------------------------------------------

function vmCell(vm) {
  const mine = vm.events.filter((e) => e.affects);
  const state = mine.length ? mine[0].status : vm.events.length ? "watching" : "idle";
  const cell = el(
    "li",
    { className: "vm", "data-vm": vm.name, "data-state": state },
    el("span", { className: "vm-name", text: vm.name }),
    el("span", { className: "vm-state", text: state }),
    el("span", { className: "vm-meta", text: `#${vm.incarnation} · ${vm.address}` }),
  );
  cell.title = `${vm.name}: ${vm.polls} polls, incarnation ${vm.incarnation}`;
  return cell;
}

function eventRow(group, event, vms) {
  const chooser = el("select", { className: "approve-as", "aria-label": `Approve ${event.EventId} as` });
  for (const vm of vms) chooser.append(el("option", { value: vm.name, text: vm.name }));
  const approve = el("button", { type: "button", className: "approve", text: "Approve" });
  approve.disabled = event.EventStatus !== "Scheduled";
  approve.addEventListener("click", () =>
    act(`approved ${event.EventId} as ${chooser.value}`, () =>
      api("POST", `/replay/fleet/vms/${enc(chooser.value)}/approve`, { event_ids: [event.EventId] }),
    ),
  );
  return el(
    "tr",
    { className: "event", "data-event": event.EventId, "data-status": event.EventStatus },
    el("td", { className: "mono", text: event.EventId }),
    el("td", { text: event.EventType }),
    el("td", { className: "status", text: event.EventStatus }),
    el("td", { text: event.Resources.join(", ") }),
    el("td", { text: event.NotBefore || "—" }),
    el("td", {}, el("label", { text: "as " }, chooser), approve),
  );
}

function groupSection(group, vms) {
  const domains = el("div", { className: "domains" });
  for (const domain of group.fault_domains) {
    const names = new Set(domain.vms);
    const label = domain.fault_domain === null ? "all VMs" : `fault domain ${domain.fault_domain}`;
    domains.append(
      el(
        "div",
        { className: "domain", "data-fault-domain": String(domain.fault_domain) },
        el("h3", { text: label }),
        el("ul", { className: "vms" }, ...vms.filter((vm) => names.has(vm.name)).map(vmCell)),
      ),
    );
  }
  const events = group.events;
  const table = el(
    "table",
    { className: "events" },
    el(
      "thead",
      {},
      el("tr", {}, ...["EventId", "Type", "Status", "Resources", "NotBefore", ""].map((h) => el("th", { text: h }))),
    ),
    el("tbody", {}, ...events.map((e) => eventRow(group, e, vms))),
  );
  return el(
    "section",
    { className: "group", "data-group": group.name },
    el(
      "h2",
      { text: `${group.name} ` },
      el("span", {
        className: "meta",
        text: `${group.trace}, ${group.rollout}, incarnation ${group.incarnation}`,
      }),
    ),
    domains,
    events.length ? table : el("p", { className: "quiet", text: "No events now." }),
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
      el("li", { text: `${a.vm} approved ${a.event_id} (${a.group}, ${a.offset_s.toFixed(1)} s)` }),
    ),
  );
  listen(fleet);
}

// ---- updates -----------------------------------------------------------------------------------

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
        $("groups").replaceChildren();
        $("empty").hidden = false;
        say(String(error.message), true);
      }
    } while (again);
    fetching = null;
  })();
  return fetching;
}

function listen(fleet) {
  const firstVm = new Map();
  for (const vm of fleet.vms) if (!firstVm.has(vm.group)) firstVm.set(vm.group, vm.name);
  for (const [group, name] of firstVm) {
    if (sockets.has(group)) continue;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const auth = TOKEN ? `?token=${enc(TOKEN)}` : "";
    const socket = new WebSocket(`${scheme}://${location.host}/vm/${enc(name)}/stream${auth}`);
    socket.addEventListener("message", () => refresh());
    socket.addEventListener("close", () => sockets.delete(group));
    sockets.set(group, socket);
  }
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
$("set-speed").addEventListener("click", () =>
  act(`speed ${$("speed").value}`, () => api("POST", "/replay/fleet/speed", { speed: $("speed").value })),
);

refresh();
