// 实时监控 Live monitoring: the project tree with online counts, every device of the chosen
// project with its live values (one websocket subscription for all of them).
"use strict";

(function () {
  const { t, api, el, stateText } = VW;
  const rows = new Map();      // device id -> {row, device}
  const chips = new Map();     // entity id -> span
  const states = new Map();    // entity id -> last state shown
  let projects = [];
  let devices = [];
  let chosen = new URLSearchParams(location.search).get("project");

  function subtree(id) {
    const out = new Set([id]);
    let grew = true;
    while (grew) {
      grew = false;
      for (const p of projects) if (p.parent && out.has(p.parent) && !out.has(p.id)) { out.add(p.id); grew = true; }
    }
    return out;
  }

  function label(state) {
    const attrs = state.attributes || {};
    const device = rows.get(attrs.device_id);
    let name = attrs.friendly_name || state.entity_id;
    if (device && device.device.name && name.startsWith(device.device.name + " ")) {
      name = name.slice(device.device.name.length + 1);
    }
    return name;
  }

  function showState(state) {
    const old = states.get(state.entity_id);
    if (old && old.last_updated > state.last_updated) return;  // an older snapshot
    states.set(state.entity_id, state);
    const deviceId = (state.attributes || {}).device_id;
    const entry = rows.get(deviceId);
    if (!entry) return;
    if (/_online$/.test(state.entity_id)) {
      setOnline(entry, state.state === "on" ? true : state.state === "off" ? false : null);
      // A DTU that registers by IMEI alone (gsm `auth: open`): flagged, never hidden.
      entry.row.querySelector(".online").title = (state.attributes || {}).weak === true ? t("weak_registration") : "";
      entry.row.classList.toggle("weak", (state.attributes || {}).weak === true);
      return;
    }
    let chip = chips.get(state.entity_id);
    if (!chip) {
      chip = el("span", { class: "val", dataset: { entity: state.entity_id, rank: VW.valueRank(state.entity_id) } }, el("small", {}), el("b", {}));
      chips.set(state.entity_id, chip);
      const box = entry.row.querySelector(".vals");
      const after = [...box.children].find((c) => c.dataset.rank > chip.dataset.rank);
      box.insertBefore(chip, after || null);
    }
    chip.firstChild.textContent = label(state) + " ";
    chip.lastChild.textContent = stateText(state);
    chip.classList.toggle("unavailable", state.state === "unavailable");
  }

  function setOnline(entry, online) {
    const badge = entry.row.querySelector(".online");
    badge.textContent = online === true ? t("online") : online === false ? t("offline") : t("unknown");
    badge.className = "badge online " + (online === true ? "ok" : online === false ? "bad" : "");
  }

  function renderTree() {
    const tree = document.getElementById("tree");
    const byParent = new Map();
    for (const p of projects) {
      const key = projects.some((q) => q.id === p.parent) ? p.parent : null;
      if (!byParent.has(key)) byParent.set(key, []);
      byParent.get(key).push(p);
    }
    function branch(parent) {
      return (byParent.get(parent) || []).map((p) => {
        const link = el("a", {
          href: "?project=" + encodeURIComponent(p.id), role: "treeitem",
          "aria-current": chosen === p.id ? "true" : null, dataset: { project: p.id },
        }, p.name, " ", el("span", { class: "counts" },
          el("span", { class: "ok" }, "●" + p.online), " ", el("span", { class: p.offline ? "bad" : "muted" }, "○" + p.offline)));
        link.addEventListener("click", (ev) => {
          ev.preventDefault();
          chosen = p.id;
          history.replaceState(null, "", "?project=" + encodeURIComponent(p.id));
          renderTree();
          renderDevices();
        });
        const kids = branch(p.id);
        return el("li", {}, link, kids.length ? el("ul", { role: "group" }, kids) : null);
      });
    }
    const all = el("a", { href: "/monitor", role: "treeitem", "aria-current": chosen ? null : "true" }, t("all_projects"));
    all.addEventListener("click", (ev) => {
      ev.preventDefault();
      chosen = null;
      history.replaceState(null, "", location.pathname);
      renderTree();
      renderDevices();
    });
    tree.replaceChildren(el("li", {}, all), ...branch(null));
  }

  function renderDevices() {
    const wanted = chosen ? subtree(chosen) : null;
    const filter = document.getElementById("device-filter").value.trim().toLowerCase();
    const body = document.getElementById("devices");
    rows.clear();
    chips.clear();
    const shown = devices.filter((d) => (!wanted || wanted.has(d.project)) &&
      (!filter || [d.id, d.name, d.location, d.area].some((v) => v && v.toLowerCase().includes(filter))));
    const names = new Map(projects.map((p) => [p.id, p.name]));
    body.replaceChildren(...shown.map((d) => {
      const row = el("tr", { dataset: { device: d.id } },
        el("td", {}, el("a", { href: "/monitor/" + encodeURIComponent(d.id) }, d.name || d.id), el("br"), el("small", { class: "muted" }, d.id)),
        el("td", {}, [names.get(d.project) || d.project, d.area, d.location].filter(Boolean).join(" · ")),
        el("td", {}, el("span", { class: "badge online" })),
        el("td", { class: "vals" }));
      const entry = { row, device: d };
      rows.set(d.id, entry);
      setOnline(entry, d.online);
      return row;
    }));
    document.getElementById("device-count").textContent = "(" + shown.length + ")";
    for (const state of states.values()) showState(state);
  }

  async function load() {
    try {
      [projects, devices] = await Promise.all([api("GET", "/api/projects"), api("GET", "/api/devices")]);
    } catch (err) {
      VW.show(document.getElementById("monitor-error"), err.message, "error");
      return;
    }
    renderTree();
    renderDevices();
    const snapshot = await VW.getStates();
    snapshot.forEach(showState);
  }

  document.addEventListener("DOMContentLoaded", () => {
    VW.subscribeStates(null, (event) => {
      if (event.new_state) showState(event.new_state);
      else {
        const chip = chips.get(event.entity_id);
        if (chip) { chip.remove(); chips.delete(event.entity_id); }
        states.delete(event.entity_id);
      }
    });
    document.getElementById("device-filter").addEventListener("input", renderDevices);
    VW.whenConnected(load);
  });
})();
