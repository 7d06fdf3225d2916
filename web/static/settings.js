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

  async function loadDevices() {
    const devices = await api("GET", "/api/devices");
    document.getElementById("device-rows").replaceChildren(...devices.map((d) => el("tr", {},
      el("td", {}, el("a", { href: "/monitor/" + encodeURIComponent(d.id) }, d.id)), el("td", {}, d.name || ""),
      el("td", {}, d.platform), el("td", {}, d.project || ""), el("td", {}, [d.area, d.location].filter(Boolean).join(" · ")),
      el("td", {}, d.online === true ? t("online") : d.online === false ? t("offline") : t("unknown")))));
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
  });
})();
