// 系统设置 Settings: users and roles, the project tree, devices, notification subscriptions,
// plugins (an htmx fragment) and the audit log. Each tab loads when first opened.
"use strict";

(function () {
  const { t, api, el, fmtDateTime } = VW;
  const roleWord = (role) => t("role_" + role);

  function status(id, text, kind) { VW.show(document.getElementById(id), text, kind); }

  async function loadUsers() {
    const users = await api("GET", "/api/users");
    document.getElementById("user-rows").replaceChildren(...users.map((u) => el("tr", { dataset: { user: u.name } },
      el("td", {}, u.name), el("td", {}, roleWord(u.role)), el("td", {}, (u.projects || []).join(", ") || t("all_projects")),
      el("td", {}, u.phone || ""), el("td", {}, u.disabled ? t("disabled") : t("active")))));
  }

  async function addUser(ev) {
    ev.preventDefault();
    const form = ev.target;
    const data = Object.fromEntries(new FormData(form));
    data.projects = data.projects.split(/[,，\s]+/).filter(Boolean);
    try {
      await api("POST", "/api/users", data);
      form.reset();
      status("user-status", t("saved"), "ok");
      loadUsers();
    } catch (err) {
      status("user-status", err.message, "error");
    }
  }

  async function loadProjects() {
    const projects = await api("GET", "/api/projects");
    document.getElementById("project-tree").replaceChildren(...projects.map((p) => el("li", { style: "margin-left:" + (p.depth * 1.2) + "rem" },
      el("strong", {}, p.name), " ", el("code", {}, p.id), " · ", t("devices_n", { n: p.devices.length }),
      " · ", el("span", { class: "ok" }, t("online") + " " + p.online), " ", el("span", { class: p.offline ? "bad" : "" }, t("offline") + " " + p.offline),
      p.lat != null ? " · " + p.lat + ", " + p.lon : "")));
  }

  // -- devices: the list; for project_admin and above also add / edit / remove and the
  // pending DTUs to adopt (docs/web.md). Devices named in configuration.yaml are read-only.
  const devicePanel = () => document.getElementById("devices");
  const deviceAdmin = () => devicePanel().dataset.admin === "1";
  let editing = null;  // the device being edited, or null when adding

  function deviceRow(d) {
    const cells = [
      el("td", {}, el("a", { href: "/monitor/" + encodeURIComponent(d.id) }, d.id)), el("td", {}, d.name || ""),
      el("td", {}, d.platform), el("td", {}, d.project || ""), el("td", {}, [d.area, d.location].filter(Boolean).join(" · ")),
      el("td", {}, d.online === true ? t("online") : d.online === false ? t("offline") : t("unknown"))];
    if (deviceAdmin()) {
      if (d.source === "api") {
        const edit = el("button", { type: "button", class: "small", dataset: { edit: d.id } }, t("edit"));
        edit.addEventListener("click", () => startEdit(d));
        const remove = el("button", { type: "button", class: "small", dataset: { remove: d.id } }, t("delete"));
        remove.addEventListener("click", () => removeDevice(d));
        cells.push(el("td", {}, edit, " ", remove));
      } else {
        cells.push(el("td", { class: "muted", title: t("device_source_" + d.source) }, t("device_source_" + d.source)));
      }
    }
    return el("tr", { dataset: { device: d.id } }, ...cells);
  }

  async function loadDevices() {
    const devices = await api("GET", "/api/devices");
    document.getElementById("device-rows").replaceChildren(...devices.map(deviceRow));
    if (!deviceAdmin()) return;
    const projects = await api("GET", "/api/projects");
    const select = document.getElementById("device-project");
    const chosen = select.value;
    select.replaceChildren(...projects.map((p) => el("option", { value: p.id }, "\u00a0\u00a0".repeat(p.depth) + p.name)));
    if (chosen) select.value = chosen;
    loadDtus();
  }

  /** DTUs to adopt (gsm plugin): pending ones (unknown IMEI, kept connected) and, under
   * `gsm.auth: allowlist` or `key`, unknown ones that were refused (the latest refusals).
   * Hidden when the plugin is absent or the role may not list DTUs. */
  async function loadDtus() {
    let listing;
    try { listing = await api("GET", "/api/gsm/dtus"); } catch (err) { return; }
    const known = new Set(listing.dtus.filter((d) => d.status === "known").map((d) => d.imei));
    const rows = new Map();
    for (const dtu of listing.dtus) {
      if (dtu.status === "pending") rows.set(dtu.imei, { imei: dtu.imei, state: dtu.connected ? t("online") : t("offline"), peer: dtu.peer, at: dtu.last_seen });
    }
    for (const r of listing.refusals || []) {
      if (r.reason === "unknown" && r.claimed && !known.has(r.claimed)) {
        rows.set(r.claimed, { imei: r.claimed, state: t("refused"), peer: r.peer, at: r.at });
      }
    }
    document.getElementById("dtu-block").hidden = false;
    const body = document.getElementById("dtu-rows");
    body.replaceChildren(...[...rows.values()].map((dtu) => {
      const adopt = el("button", { type: "button", class: "small", dataset: { adopt: dtu.imei } }, t("adopt"));
      adopt.addEventListener("click", () => startAdopt(dtu));
      return el("tr", { dataset: { dtu: dtu.imei } }, el("td", {}, el("code", {}, dtu.imei)),
        el("td", {}, dtu.state), el("td", {}, dtu.peer || ""), el("td", {}, fmtDateTime(dtu.at)), el("td", {}, adopt));
    }));
    if (!rows.size) body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, t("no_pending_dtus"))));
  }

  function resetDeviceForm() {
    const form = document.getElementById("device-form");
    editing = null;
    form.reset();
    form.elements.id.readOnly = false;
    form.elements.platform.readOnly = false;
    document.getElementById("device-cancel").hidden = true;
    document.getElementById("protection-label").hidden = true;
    const title = document.getElementById("device-form-title");
    title.textContent = title.dataset.add;
  }

  function startEdit(d) {
    const form = document.getElementById("device-form");
    resetDeviceForm();
    editing = d;
    for (const key of ["id", "name", "platform", "project", "area", "location"]) form.elements[key].value = d[key] || "";
    form.elements.id.readOnly = true;
    form.elements.platform.readOnly = true;
    document.getElementById("device-cancel").hidden = false;
    document.getElementById("protection-label").hidden = d.platform !== "arcm";
    const title = document.getElementById("device-form-title");
    title.textContent = title.dataset.edit + " " + d.id;
    form.scrollIntoView({ block: "nearest" });
    form.elements.name.focus();
  }

  function startAdopt(dtu) {
    const form = document.getElementById("device-form");
    resetDeviceForm();
    form.elements.id.value = "dtu-" + dtu.imei.slice(-6) + "-1";
    form.elements.transport.value = "gsm";
    form.elements.imei.value = dtu.imei;
    form.elements.unit.value = "1";
    form.elements.name.focus();
  }

  function linkOf(data) {
    if (!data.transport) return null;
    const link = { transport: data.transport };
    if (data.host) link.host = data.host;
    if (data.port) link.port = /^\d+$/.test(data.port) ? Number(data.port) : data.port;
    if (data.unit !== "") link.unit = Number(data.unit);
    if (data.imei) link.imei = data.imei;
    return link;
  }

  async function saveDevice(ev) {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(ev.target));
    const body = {};
    for (const key of ["name", "project", "area", "location", "poll_interval"]) {
      if (data[key]) body[key] = data[key];
      else if (editing && ["name", "area", "location"].includes(key)) body[key] = null;
    }
    const link = linkOf(data);
    if (link) body.link = link;
    try {
      if (editing) {
        await api("PATCH", "/api/devices/" + encodeURIComponent(editing.id), body);
        if (data.protection_mode !== "") {
          await api("POST", "/api/services/arcm/set_parameter",
            { device_id: editing.id, name: "protection_mode", value: Number(data.protection_mode) });
        }
      } else {
        await api("POST", "/api/devices", Object.assign({ id: data.id, platform: data.platform }, body));
      }
      status("device-status", t("saved"), "ok");
      resetDeviceForm();
      loadDevices();
    } catch (err) {
      status("device-status", err.message, "error");
    }
  }

  async function removeDevice(d) {
    if (!window.confirm(t("confirm_remove_device", { device: d.name || d.id }))) return;
    try {
      await api("DELETE", "/api/devices/" + encodeURIComponent(d.id));
      status("device-status", t("removed_device", { device: d.id }), "ok");
      loadDevices();
    } catch (err) {
      status("device-status", err.message, "error");
    }
  }

  async function loadSubscriptions() {
    const subs = await api("GET", "/api/subscriptions");
    document.getElementById("subscription-rows").replaceChildren(...subs.map((s) => {
      const remove = el("button", { type: "button", class: "small" }, t("delete"));
      remove.addEventListener("click", async () => {
        try { await api("DELETE", "/api/subscriptions/" + s.id); loadSubscriptions(); }
        catch (err) { status("subscription-status", err.message, "error"); }
      });
      return el("tr", {}, el("td", {}, s.user || ""), el("td", {}, (s.kinds.length ? s.kinds : ["alarm", "fault", "event"]).map((k) => t("kind_" + k)).join(" ")),
        el("td", {}, s.min_severity), el("td", {}, s.channels.join(", ") || t("all")),
        el("td", {}, s.quiet_hours ? s.quiet_hours.start + "–" + s.quiet_hours.end : "—"), el("td", {}, remove));
    }));
  }

  async function addSubscription(ev) {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const body = {
      kinds: form.getAll("kinds"),
      min_severity: form.get("min_severity"),
      channels: String(form.get("channels") || "").split(/[,，\s]+/).filter(Boolean),
    };
    if (form.get("quiet_start") && form.get("quiet_end")) body.quiet_hours = { start: form.get("quiet_start"), end: form.get("quiet_end") };
    try {
      await api("POST", "/api/subscriptions", body);
      status("subscription-status", t("saved"), "ok");
      loadSubscriptions();
    } catch (err) {
      status("subscription-status", err.message, "error");
    }
  }

  async function loadAudit() {
    const rows = await api("GET", "/api/audit?limit=200");
    document.getElementById("audit-rows").replaceChildren(...rows.map((r) => el("tr", { class: r.result === "ok" ? "" : "alarm" },
      el("td", {}, fmtDateTime(r.ts)), el("td", {}, r.actor || ""), el("td", {}, r.action),
      el("td", {}, r.result), el("td", {}, r.target || ""), el("td", {}, r.ip || ""))));
  }

  const LOADERS = {
    users: loadUsers, projects: loadProjects, devices: loadDevices, subscriptions: loadSubscriptions,
    audit: loadAudit, plugins: async () => document.body.dispatchEvent(new Event("vw:plugins")),
  };

  document.addEventListener("DOMContentLoaded", () => {
    const loaded = new Set();
    VW.tabs(document.getElementById("settings-tabs"), (panel) => {
      if (loaded.has(panel)) return;
      loaded.add(panel);
      LOADERS[panel]().catch((err) => document.getElementById(panel).prepend(el("p", { class: "notice error" }, err.message)));
    });
    const userForm = document.getElementById("user-form");
    if (userForm) userForm.addEventListener("submit", addUser);
    document.getElementById("subscription-form").addEventListener("submit", addSubscription);
    const deviceForm = document.getElementById("device-form");
    if (deviceForm) {
      deviceForm.addEventListener("submit", saveDevice);
      document.getElementById("device-cancel").addEventListener("click", resetDeviceForm);
    }
  });
})();
