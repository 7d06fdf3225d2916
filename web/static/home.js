// 首页 Home: my pending tasks, live alarm messages, this month's statistics, the project map.
"use strict";

(function () {
  const { t, api, el, fmtDateTime, fmtTime, message, typeWord } = VW;
  const unacked = new Map();  // alarm id -> row
  const KIND_COLOURS = { alarm: "#c62828", fault: "#ef6c00", event: "#1565c0" };
  const LIMIT = 100;  // the newest; the whole list is on 隐患管理

  function setCount(id, n, more) {
    document.getElementById(id).textContent = n + (more ? "+" : "");
  }

  function refreshUnackedCount() {
    setCount("count-unacked", unacked.size, unacked.size >= LIMIT);
    document.getElementById("unacked-empty").hidden = unacked.size > 0;
  }

  async function acknowledge(record, button) {
    button.disabled = true;
    try {
      await api("POST", "/api/alarms/" + record.id + "/ack", {});
      dropUnacked(record.id);
    } catch (err) {
      button.disabled = false;
      VW.show(document.getElementById("tasks-error"), err.message, "error");
    }
  }

  function addUnacked(record, first) {
    // announced before the database stored it: no id yet (docs/alarms.md), keyed by its ref
    const key = record.id != null ? record.id : "ref:" + record.ref;
    if (unacked.has(key) || record.acknowledged || record.status !== "active") return;
    if (record.kind !== "alarm" && record.kind !== "fault") return;
    const button = el("button", { type: "button", class: "small", disabled: record.id == null }, t("acknowledge"));
    button.addEventListener("click", () => acknowledge(record, button));
    const row = el("tr", { class: record.kind, dataset: { alarmId: record.id } },
      el("td", {}, fmtDateTime(record.started_at)),
      el("td", {}, el("a", { href: "/monitor/" + encodeURIComponent(record.device_id) },
        record.device_name || record.device_id), record.location ? " · " + record.location : ""),
      el("td", {}, el("span", { class: "kind " + record.kind }, t("kind_" + record.kind)), " ", message(record)),
      el("td", {}, button));
    const body = document.getElementById("unacked");
    if (first) body.prepend(row); else body.append(row);
    unacked.set(key, row);
    refreshUnackedCount();
  }

  function dropUnacked(id) {
    const row = unacked.get(id);
    if (!row) return;
    row.remove();
    unacked.delete(id);
    refreshUnackedCount();
  }

  function fetchTasks() {
    return Promise.all([
      api("GET", "/api/alarms?status=active&acknowledged=false&kind=alarm,fault&limit=" + LIMIT),
      api("GET", "/api/workorders?status=open&limit=1000"),
      api("GET", "/api/patrols?status=pending&limit=1000"),
    ]);
  }

  async function loadTasks(pending) {
    const error = document.getElementById("tasks-error");
    try {
      const [alarms, orders, patrols] = await (pending || fetchTasks());
      for (const id of [...unacked.keys()]) dropUnacked(id);
      alarms.forEach((record) => addUnacked(record, false));
      refreshUnackedCount();
      setCount("count-workorders", orders.length, orders.length >= 1000);
      setCount("count-patrols", patrols.length, patrols.length >= 1000);
      VW.show(error, "");
    } catch (err) {
      VW.show(error, err.message, "error");
    }
  }

  function liveMessage(event, record) {
    const list = document.getElementById("live-alarms");
    document.getElementById("live-empty").hidden = true;
    const what = event.event_type === "alarm_cleared" ? t("cleared") :
      event.event_type === "alarm_acknowledged" ? t("acknowledged") : "";
    list.prepend(el("li", { class: record.kind + (what ? " done" : "") },
      el("time", {}, fmtTime(event.time_fired)), " ",
      el("span", { class: "kind " + record.kind }, t("kind_" + record.kind)), " ",
      record.device_name || record.device_id, " ", message(record), what ? " — " + what : ""));
    while (list.children.length > 50) list.lastChild.remove();
  }

  // -- statistics ---------------------------------------------------------------------------
  let charts = [];

  async function loadStatistics(pending) {
    const month = VW.hubMonth();
    document.getElementById("stats-month").textContent = month;
    let stats;
    try {
      stats = await (pending || api("GET", "/api/statistics?month=" + month));
    } catch (err) {
      document.getElementById("stats-totals").textContent = err.message;
      return;
    }
    const totals = document.getElementById("stats-totals");
    totals.replaceChildren(...["alarm", "fault", "event"].map((kind) =>
      el("span", { class: "total " + kind, dataset: { kind } }, t("kind_" + kind), " ", el("strong", {}, stats.totals[kind] || 0))));
    if (typeof echarts === "undefined") return;
    charts.forEach((c) => c.dispose());
    const daily = echarts.init(document.getElementById("chart-daily"));
    daily.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 32, right: 8, top: 28, bottom: 24 },
      xAxis: { type: "category", data: stats.daily.map((d) => d.date.slice(8)) },
      yAxis: { type: "value", minInterval: 1 },
      series: ["alarm", "fault"].map((kind) => ({
        name: t("kind_" + kind), type: "bar", stack: "n", itemStyle: { color: KIND_COLOURS[kind] },
        data: stats.daily.map((d) => d[kind]),
      })),
    });
    const types = echarts.init(document.getElementById("chart-types"));
    const byType = stats.by_type.filter((row) => row.kind !== "event").slice(0, 10);
    types.setOption({
      animation: false,
      tooltip: { trigger: "item" },
      series: [{
        type: "pie", radius: ["35%", "65%"],
        data: byType.map((row) => ({ name: typeWord(row.type), value: row.count })),
        label: { formatter: "{b} {c}" },
      }],
      title: byType.length ? undefined : { text: t("no_hazards_this_month"), left: "center", top: "middle", textStyle: { fontSize: 13, color: "#6b7280" } },
    });
    charts = [daily, types];
  }

  // -- map ------------------------------------------------------------------------------------
  async function loadMap(pending) {
    let projects;
    try {
      projects = await (pending || api("GET", "/api/projects"));
    } catch (err) {
      return;
    }
    const list = document.getElementById("map-list");
    list.replaceChildren(...projects.filter((p) => p.parent === null || p.lat != null).map((p) =>
      el("li", {}, el("a", { href: "/monitor?project=" + encodeURIComponent(p.id) }, p.name), " ",
        el("span", { class: "ok" }, t("online") + " " + p.online), " ",
        el("span", { class: p.offline ? "bad" : "" }, t("offline") + " " + p.offline))));
    const placed = projects.filter((p) => p.lat != null && p.lon != null);
    const box = document.getElementById("map");
    if (!placed.length || typeof L === "undefined") { box.hidden = true; return; }
    const tiles = VW.boot.map.tiles;
    const map = L.map(box, { attributionControl: !!tiles, scrollWheelZoom: false });
    if (tiles) L.tileLayer(tiles, { attribution: VW.boot.map.attribution || "" }).addTo(map);
    else box.classList.add("plain");
    const bounds = [];
    for (const p of placed) {
      const colour = p.offline ? KIND_COLOURS.fault : "#2e7d32";
      L.circleMarker([p.lat, p.lon], { radius: 10, color: colour, fillColor: colour, fillOpacity: 0.7 })
        .bindTooltip(p.name + " (" + p.online + "/" + (p.online + p.offline) + ")", { permanent: !tiles, direction: "right" })
        .on("click", () => { location.href = "/monitor?project=" + encodeURIComponent(p.id); })
        .addTo(map);
      bounds.push([p.lat, p.lon]);
    }
    if (bounds.length === 1) map.setView(bounds[0], 13);
    else map.fitBounds(bounds, { padding: [40, 40], maxZoom: 14 });
  }

  // The page's data is asked for as soon as this script runs: the template loads it before
  // ECharts and Leaflet, so the requests are on the wire while those (1 MB) are parsed, and
  // are drawn once the document is ready. `.catch` only marks them handled until then.
  const early = {
    tasks: fetchTasks(),
    stats: api("GET", "/api/statistics?month=" + VW.hubMonth()),
    projects: api("GET", "/api/projects"),
  };
  Object.values(early).forEach((pending) => pending.catch(() => null));

  document.addEventListener("DOMContentLoaded", () => {
    VW.subscribeEvents("alarm_raised", (event) => {
      liveMessage(event, event.data);
      addUnacked(event.data, true);
    });
    VW.subscribeEvents("alarm_updated", (event) => {  // a provisional record got its id
      const record = event.data;
      if (record.id == null || !record.ref || !unacked.has("ref:" + record.ref)) return;
      dropUnacked("ref:" + record.ref);
      addUnacked(record, true);
    });
    VW.subscribeEvents("alarm_acknowledged", (event) => {
      liveMessage(event, event.data);
      dropUnacked(event.data.id);
    });
    VW.subscribeEvents("alarm_handled", (event) => dropUnacked(event.data.id));
    VW.subscribeEvents("alarm_cleared", (event) => liveMessage(event, event.data));
    // 隐患提醒: what nobody dealt with in time (hub/core/reminders.py), grouped per project.
    VW.subscribeEvents("reminder", (event) => {
      const data = event.data;
      const list = document.getElementById("live-alarms");
      document.getElementById("live-empty").hidden = true;
      list.prepend(el("li", { class: "reminder", dataset: { reason: data.reason } },
        el("time", {}, fmtTime(event.time_fired)), " ", el("span", { class: "kind reminder" }, t("reminder")), " ",
        VW.lang === "en" ? data.message_en || data.message : data.message));
    });
    // The snapshot is loaded at once (not after the websocket: that would add its handshake
    // to the page's time) and again whenever the subscriptions (re)start, so an alarm raised
    // between the first load and the subscription is not missed (rows merge by id).
    const tasks = loadTasks(early.tasks);
    VW.whenConnected(() => tasks.then(() => loadTasks()));
    // "Ready" (what bench/bench_web.py measures): tasks, charts and map are on the screen.
    Promise.all([tasks, loadStatistics(early.stats), loadMap(early.projects)]).then(() => {
      performance.mark("vw-ready");
      document.body.dataset.ready = "true";
    });
    window.addEventListener("resize", () => charts.forEach((c) => c.resize()));
  });
})();
