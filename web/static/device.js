// One device: live values, its open alarms, and 24 h charts from GET /api/history/{entity_id}.
"use strict";

(function () {
  const { t, api, el, stateText, fmtDateTime, fmtTime, message } = VW;
  const deviceId = VW.boot.device_id;
  const values = new Map();   // entity id -> dd
  const series = new Map();   // entity id -> {chart, index, data}
  const alarms = new Map();   // alarm id -> row
  const HOURS = 24;
  const GROUPS = [
    ["chart_residual", /_residual_current$/],
    ["chart_temperature", /_temperature(_\d+)?$/],
    ["chart_voltage", /_voltage_[abc]$/],
    ["chart_current", /_current_[abc]$/],
    ["chart_thd", /_thd_[abc]$/],
    ["chart_power", /_power$/],
    ["chart_energy", /_energy$/],
    ["chart_other", /^sensor\./],
  ];
  let device = null;

  function short(state) {
    const attrs = state.attributes || {};
    let name = attrs.friendly_name || state.entity_id;
    if (device && device.name && name.startsWith(device.name + " ")) name = name.slice(device.name.length + 1);
    return name;
  }

  function showState(state) {
    if (/_online$/.test(state.entity_id)) {
      const badge = document.getElementById("device-online");
      const on = state.state === "on";
      badge.textContent = on ? t("online") : state.state === "off" ? t("offline") : t("unknown");
      badge.className = "badge " + (on ? "ok" : "bad");
      // A DTU that registers by IMEI alone: anyone who reads its label could claim it.
      const weak = document.getElementById("device-weak");
      if ((state.attributes || {}).weak === true && !weak) {
        badge.after(" ", el("span", { id: "device-weak", class: "badge weak" }, t("weak_registration")));
      } else if ((state.attributes || {}).weak !== true && weak) {
        weak.remove();
      }
      // Several workers: the worker that holds the DTU's socket and polls this device.
      const worker = (state.attributes || {}).worker;
      let via = document.getElementById("device-worker");
      if (worker && !via) {
        via = el("span", { id: "device-worker", class: "badge" });
        badge.after(" ", via);
      }
      if (via && worker) via.textContent = t("connected_to_worker", { worker });
      else if (via) via.remove();
      return;
    }
    let dd = values.get(state.entity_id);
    if (!dd) {
      const dt = el("dt", {});
      dd = el("dd", { dataset: { entity: state.entity_id, rank: VW.valueRank(state.entity_id) } });
      const box = document.getElementById("values");
      const after = [...box.querySelectorAll("dd")].find((d) => d.dataset.rank > dd.dataset.rank);
      box.insertBefore(dt, after ? after.previousSibling : null);
      box.insertBefore(dd, after ? after.previousSibling : null);
      values.set(state.entity_id, dd);
    }
    dd.previousSibling.textContent = short(state);
    dd.textContent = stateText(state);
    dd.classList.toggle("unavailable", state.state === "unavailable");
    const line = series.get(state.entity_id);
    const number = Number(state.state);
    if (line && Number.isFinite(number)) {
      line.data.push([Date.parse(state.last_updated), number]);
      const patch = Array.from({ length: line.count }, (_, i) => (i === line.index ? { data: line.data } : {}));
      line.chart.setOption({ series: patch });
    }
  }

  // -- alarms ---------------------------------------------------------------------------------
  function alarmRow(record) {
    // A record announced before the database stored it has no id yet, only its `ref`; the
    // alarm_updated that brings the id carries the same ref (docs/alarms.md).
    const pending = "ref:" + record.ref;
    if (record.id != null && record.ref && alarms.has(pending)) {
      alarms.set(record.id, alarms.get(pending));
      alarms.delete(pending);
    }
    const key = record.id != null ? record.id : pending;
    const old = alarms.get(key);
    if (record.status !== "active") {
      if (old) { old.remove(); alarms.delete(key); }
      document.getElementById("device-alarms-empty").hidden = alarms.size > 0;
      return;
    }
    const button = record.acknowledged ? null : el("button", { type: "button", class: "small", disabled: record.id == null }, t("acknowledge"));
    if (button) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        try { alarmRow(await api("POST", "/api/alarms/" + record.id + "/ack", {})); }
        catch (err) { button.disabled = false; VW.show(document.getElementById("device-error"), err.message, "error"); }
      });
    }
    const row = el("tr", { class: record.kind, dataset: { alarmId: record.id } },
      el("td", {}, fmtDateTime(record.started_at)),
      el("td", {}, el("span", { class: "kind " + record.kind }, t("kind_" + record.kind)), " ", message(record)),
      el("td", {}, record.acknowledged ? t("acknowledged") + " · " + (record.acked_by || "") : t("unacknowledged")),
      el("td", {}, button));
    if (old) old.replaceWith(row); else document.getElementById("device-alarms").prepend(row);
    alarms.set(key, row);
    document.getElementById("device-alarms-empty").hidden = true;
  }

  // -- charts ---------------------------------------------------------------------------------
  async function history(entityId, start, end) {
    const query = "?start=" + encodeURIComponent(start.toISOString()) + "&end=" +
      encodeURIComponent(end.toISOString()) + "&resolution=5m";
    try {
      const body = await api("GET", "/api/history/" + encodeURIComponent(entityId) + query);
      // `t` as ISO 8601 or unix seconds; the bucket's mean (a raw reading has only `last`).
      return (body.points || []).map((p) => [typeof p.t === "number" ? p.t * 1000 : Date.parse(p.t),
        p.mean != null ? p.mean : p.last]);
    } catch (err) {
      if (err.status === 404) return null;  // no history (yet) for this entity
      throw err;
    }
  }

  async function drawGroup(key, entities, states) {
    const box = el("figure", { class: "chart-box", dataset: { group: key } },
      el("figcaption", {}, t(key)), el("div", { class: "chart" }));
    document.getElementById("charts").append(box);
    const end = new Date();
    const start = new Date(end.getTime() - HOURS * 3600 * 1000);
    let found;
    try {
      found = await Promise.all(entities.map((id) => history(id, start, end)));
    } catch (err) {
      box.lastChild.replaceWith(el("p", { class: "notice error" }, err.message));
      return;
    }
    // 404 (no such entity yet) and an empty series both mean: nothing recorded in these 24 h.
    if (found.every((points) => points === null || points.length === 0)) {
      box.dataset.empty = "true";
      box.lastChild.replaceWith(el("p", { class: "empty no-history" }, t("no_history_yet")));
      return;
    }
    const chart = echarts.init(box.lastChild);
    const option = {
      animation: false,
      tooltip: { trigger: "axis", valueFormatter: (v) => (v == null ? "" : Number(v).toFixed(2)) },
      legend: { top: 0, type: "scroll" },
      grid: { left: 48, right: 12, top: 28, bottom: 28 },
      xAxis: { type: "time", min: start.getTime(), axisLabel: { formatter: (v) => fmtTime(new Date(v)).slice(0, 5) } },
      yAxis: { type: "value", scale: true },
      series: entities.map((id, index) => {
        const data = found[index] || [];
        series.set(id, { chart, index, data, count: entities.length });
        return { name: short(states.get(id) || { entity_id: id }), type: "line", showSymbol: false, data };
      }),
    };
    chart.setOption(option);
    window.addEventListener("resize", () => chart.resize());
  }

  function drawCharts(states) {
    let left = [...states.keys()].filter((id) => id.startsWith("sensor.")).sort();
    for (const [key, pattern] of GROUPS) {
      const mine = left.filter((id) => pattern.test(id));
      if (!mine.length) continue;
      left = left.filter((id) => !mine.includes(id));
      drawGroup(key, mine, states);
    }
  }

  async function load() {
    try {
      device = await api("GET", "/api/devices/" + encodeURIComponent(deviceId));
    } catch (err) {
      VW.show(document.getElementById("device-error"), err.message, "error");
      return;
    }
    document.getElementById("device-name").textContent = device.name || device.id;
    const projects = await api("GET", "/api/projects").catch(() => []);
    const project = projects.find((p) => p.id === device.project);
    document.getElementById("device-where").textContent = [device.id, device.platform,
      project ? project.name : device.project, device.area, device.location].filter(Boolean).join(" · ");
    const control = document.getElementById("device-control");
    if (control) control.href = "/control?device=" + encodeURIComponent(device.id);
    const snapshot = await VW.getStates(device.entities);
    const byId = new Map(snapshot.map((s) => [s.entity_id, s]));
    snapshot.forEach(showState);
    const open = await api("GET", "/api/alarms?status=active&device=" + encodeURIComponent(deviceId));
    open.reverse().forEach(alarmRow);
    document.getElementById("device-alarms-empty").hidden = alarms.size > 0;
    if (!series.size && typeof echarts !== "undefined") drawCharts(byId);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const mine = (fn) => (event) => { if (event.data.device_id === deviceId) fn(event.data); };
    ["alarm_raised", "alarm_updated", "alarm_acknowledged", "alarm_handled", "alarm_cleared"]
      .forEach((type) => VW.subscribeEvents(type, mine(alarmRow)));
    // Every state of the device's entities (the list is known once the device is loaded, so
    // subscribe to all and keep ours).
    VW.subscribeStates(null, (event) => {
      if (event.new_state && (event.new_state.attributes || {}).device_id === deviceId) showState(event.new_state);
    });
    VW.whenConnected(load);
  });
})();
