// 隐患管理 Hazards: the event log with filters, batch acknowledge / handle, CSV export; work
// orders and patrol rounds. The log follows alarm events live (no polling).
"use strict";

(function () {
  const { t, api, el, fmtDateTime, message } = VW;
  const LIMIT = 500;
  const rows = new Map();  // alarm id -> {row, record}
  let filters = new URLSearchParams();

  function query() {
    const form = document.getElementById("event-filters");
    const data = new FormData(form);
    const params = new URLSearchParams();
    for (const [key, value] of data.entries()) {
      if (!value) continue;
      // Dates are whole days in the hub's time zone; the API takes ISO 8601 instants.
      if (key === "since") params.set(key, VW.hubInstant(value, "00:00:00").toISOString());
      else if (key === "until") params.set(key, VW.hubInstant(value, "23:59:59").toISOString());
      else params.set(key, value);
    }
    return params;
  }

  function selected() {
    return [...rows.values()].filter((r) => r.record.id != null && r.row.querySelector("input").checked).map((r) => r.record.id);
  }

  function updateSelected() {
    const n = selected().length;
    document.getElementById("selected-count").textContent = n ? t("selected_n", { n }) : "";
  }

  function matches(record) {
    for (const [key, value] of filters.entries()) {
      if (key === "kind" && record.kind !== value) return false;
      if (key === "status" && value !== "all" && record.status !== value) return false;
      if (key === "acknowledged" && String(record.acknowledged) !== value) return false;
      if (key === "device" && record.device_id !== value) return false;
      if (key === "project" || key === "since" || key === "until") return false;  // reload instead
    }
    return true;
  }

  function render(record, first) {
    // announced before the database stored it: no id yet (docs/alarms.md), keyed by its ref
    // until the alarm_updated that brings the id
    const pending = "ref:" + record.ref;
    if (record.id != null && record.ref && rows.has(pending)) {
      rows.set(record.id, rows.get(pending));
      rows.delete(pending);
    }
    const key = record.id != null ? record.id : pending;
    const old = rows.get(key);
    const checked = old ? old.row.querySelector("input").checked : false;
    const box = el("input", { type: "checkbox", "aria-label": t("select") + " " + record.id, checked, disabled: record.id == null });
    box.addEventListener("change", updateSelected);
    const row = el("tr", { class: record.kind + (record.status === "active" ? " active" : ""), dataset: { alarmId: record.id } },
      el("td", {}, box),
      el("td", {}, fmtDateTime(record.started_at)),
      el("td", {}, el("span", { class: "kind " + record.kind }, t("kind_" + record.kind))),
      el("td", {}, message(record), record.count > 1 ? " ×" + record.count : ""),
      el("td", {}, el("a", { href: "/monitor/" + encodeURIComponent(record.device_id) }, record.device_name || record.device_id)),
      el("td", {}, [record.area, record.location].filter(Boolean).join(" · ")),
      el("td", { class: "status" }, record.status === "active" ? t("status_active") : t("status_cleared") + " " + fmtDateTime(record.cleared_at)),
      el("td", { class: "acked" }, record.acknowledged ? (record.acked_by || "") + " " + fmtDateTime(record.acked_at) : "—"),
      el("td", { class: "handled" }, record.handled_at ? (record.handled_by || "") + (record.note ? "：" + record.note : "") : "—"));
    const body = document.getElementById("event-rows");
    if (old) old.row.replaceWith(row);
    else if (first) body.prepend(row);
    else body.append(row);
    rows.set(key, { row, record });
  }

  async function loadEvents() {
    filters = query();
    const status = document.getElementById("events-status");
    const params = new URLSearchParams(filters);
    params.set("limit", LIMIT);
    try {
      const records = await api("GET", "/api/alarms?" + params);
      rows.clear();
      document.getElementById("event-rows").replaceChildren();
      records.forEach((r) => render(r, false));
      document.getElementById("events-more").hidden = records.length < LIMIT;
      VW.show(status, records.length ? "" : t("no_records"));
    } catch (err) {
      rows.clear();  // no stale rows under a filter the hub refused
      document.getElementById("event-rows").replaceChildren();
      VW.show(status, err.message, "error");
    }
    document.getElementById("select-all").checked = false;
    updateSelected();
  }

  async function batch(action) {
    const ids = selected();
    const status = document.getElementById("events-status");
    if (!ids.length) { VW.show(status, t("select_first"), "error"); return; }
    const note = document.getElementById("batch-note").value.trim();
    try {
      const answer = await api("POST", "/api/alarms/" + action, note ? { ids, note } : { ids });
      answer.done.forEach((record) => render(record, false));
      VW.show(status, t(action === "ack" ? "batch_acked" : "batch_handled", { n: answer.done.length, unchanged: answer.unchanged.length }), "ok");
    } catch (err) {
      VW.show(status, err.message, "error");
    }
    updateSelected();
  }

  async function exportCsv() {
    const params = query();
    params.set("lang", VW.lang);
    try {
      await VW.download("/api/alarms.csv?" + params, "voltwatch-events.csv");
    } catch (err) {
      VW.show(document.getElementById("events-status"), err.message, "error");
    }
  }

  /** One work order per selected alarm (the hub returns the open one if it exists). */
  async function openWorkorders() {
    const ids = selected();
    const status = document.getElementById("events-status");
    if (!ids.length) { VW.show(status, t("select_first"), "error"); return; }
    try {
      const made = [];
      for (const id of ids) made.push((await api("POST", "/api/workorders", { alarm_id: id })).id);
      VW.show(status, t("workorders_opened", { ids: made.map((n) => "#" + n).join(" ") }), "ok");
    } catch (err) {
      VW.show(status, err.message, "error");
    }
  }

  // -- work orders and patrols --------------------------------------------------------------
  const WO = VW.boot.workorder;

  /** Move an order on: the next statuses the hub allows, an assignee when dispatching, a note. */
  function stepCell(order) {
    const next = WO.next[order.status] || [];
    if (!next.length) return el("td", {}, "—");
    const choice = el("select", { "aria-label": t("next_step") + " #" + order.id },
      next.map((status) => el("option", { value: status }, WO.words[status] || status)));
    const who = el("input", { size: 6, placeholder: t("assignee"), "aria-label": t("assignee"), value: order.assignee || "" });
    const note = el("input", { size: 8, placeholder: t("note"), "aria-label": t("note") });
    const go = el("button", { type: "button", class: "small" }, t("apply"));
    go.addEventListener("click", async () => {
      const body = { status: choice.value };
      if (who.value.trim() && who.value.trim() !== (order.assignee || "")) body.assignee = who.value.trim();
      if (note.value.trim()) body.note = note.value.trim();
      go.disabled = true;
      try {
        await api("PATCH", "/api/workorders/" + order.id, body);
        loadWorkorders();
      } catch (err) {
        go.disabled = false;
        VW.show(document.getElementById("wo-status-line"), "#" + order.id + "：" + err.message, "error");
      }
    });
    return el("td", { class: "step" }, choice, " ", who, " ", note, " ", go);
  }

  // Photos of a work order: a row under the order with thumbnails (tap for full size) and an
  // upload that opens the phone's camera. Images come through the API with the page's
  // credentials, as object URLs.
  function photoCell(order) {
    const open = el("button", { type: "button", class: "small", dataset: { photos: order.id }, "aria-expanded": "false" },
      "📷 " + t("photos"));
    open.addEventListener("click", () => togglePhotos(order, open));
    return el("td", {}, open);
  }

  async function togglePhotos(order, button) {
    const row = button.closest("tr");
    const existing = row.nextElementSibling;
    if (existing && existing.dataset.photosOf === String(order.id)) {
      existing.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    const strip = el("div", { class: "thumbs" });
    const note = el("p", { class: "notice", hidden: true });
    const input = el("input", { type: "file", accept: "image/*", capture: "environment", "aria-label": t("add_photo") + " #" + order.id });
    input.addEventListener("change", async () => {
      if (!input.files.length) return;
      const form = new FormData();
      form.append("photo", input.files[0]);
      VW.show(note, t("uploading"));
      try {
        await VW.upload("/api/workorders/" + order.id + "/photos", form);
        VW.show(note, t("photo_added"), "ok");
        input.value = "";
        fillPhotos(order, strip, note);
      } catch (err) {
        VW.show(note, err.message, "error");
      }
    });
    const cell = el("td", { colspan: row.children.length },
      el("label", { class: "upload" }, "📷 " + t("add_photo") + " ", input), note, strip);
    row.after(el("tr", { class: "photo-row", dataset: { photosOf: order.id } }, cell));
    fillPhotos(order, strip, note);
  }

  async function fillPhotos(order, strip, note) {
    try {
      const photos = await api("GET", "/api/workorders/" + order.id + "/photos");
      const items = await Promise.all(photos.map(async (p) => {
        const url = await VW.blobUrl(p.url);
        const img = el("img", { src: url, alt: p.original_name || t("photo") + " " + p.id, class: "thumb", loading: "lazy" });
        const link = el("a", { href: url, dataset: { photo: p.id }, title: (p.uploaded_by || "") + " " + fmtDateTime(p.uploaded_at) }, img);
        link.addEventListener("click", (ev) => {
          ev.preventDefault();
          document.getElementById("photo-full").src = url;
          document.getElementById("photo-viewer").showModal();
        });
        return link;
      }));
      strip.replaceChildren(...(items.length ? items : [el("span", { class: "empty" }, t("no_photos"))]));
    } catch (err) {
      VW.show(note, err.message, "error");
    }
  }

  async function loadWorkorders() {
    const wanted = document.getElementById("wo-status").value;
    const line = document.getElementById("wo-status-line");
    try {
      const orders = await api("GET", "/api/workorders?limit=500" + (wanted ? "&status=" + wanted : ""));
      document.getElementById("wo-rows").replaceChildren(...orders.map((o) => el("tr", { class: o.overdue ? "overdue" : "", dataset: { workorder: o.id } },
        el("td", {}, o.id), el("td", {}, o.title), el("td", {}, o.device_id || ""),
        el("td", {}, (o.status_text || {})[VW.lang] || o.status, o.overdue ? " · " + t("overdue") : ""),
        el("td", {}, o.assignee || "—"), el("td", {}, fmtDateTime(o.due_at)), el("td", {}, fmtDateTime(o.created_at)),
        stepCell(o), photoCell(o))));
      VW.show(line, orders.length ? "" : t("no_records"));
    } catch (err) {
      VW.show(line, err.message, "error");
    }
  }

  async function loadPatrols() {
    const line = document.getElementById("patrol-status-line");
    try {
      const rounds = await api("GET", "/api/patrols?limit=500");
      document.getElementById("patrol-rows").replaceChildren(...rounds.map((p) => el("tr", { class: p.overdue ? "overdue" : "" },
        el("td", {}, p.id), el("td", {}, p.name), el("td", {}, p.project || ""),
        el("td", {}, t("patrol_" + p.status), p.overdue ? " · " + t("overdue") : ""),
        el("td", {}, p.assignee || "—"), el("td", {}, fmtDateTime(p.due_at)))));
      VW.show(line, rounds.length ? "" : t("no_records"));
    } catch (err) {
      VW.show(line, err.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const loaded = new Set();
    VW.tabs(document.getElementById("hazard-tabs"), (panel) => {
      if (loaded.has(panel)) return;
      loaded.add(panel);
      if (panel === "workorders") loadWorkorders();
      if (panel === "patrols") loadPatrols();
    });
    const form = document.getElementById("event-filters");
    form.addEventListener("submit", (ev) => { ev.preventDefault(); loadEvents(); });
    document.getElementById("export-csv").addEventListener("click", exportCsv);
    document.getElementById("batch-ack").addEventListener("click", () => batch("ack"));
    document.getElementById("batch-handle").addEventListener("click", () => batch("handle"));
    document.getElementById("batch-workorder").addEventListener("click", openWorkorders);
    document.getElementById("select-all").addEventListener("change", (ev) => {
      rows.forEach((r) => { r.row.querySelector("input").checked = ev.target.checked; });
      updateSelected();
    });
    document.getElementById("wo-status").addEventListener("change", loadWorkorders);
    api("GET", "/api/projects").then((projects) => {
      document.getElementById("filter-project").append(...projects.map((p) =>
        el("option", { value: p.id }, "\u00a0".repeat(2 * p.depth) + p.name)));
    }).catch(() => null);
    for (const type of ["alarm_raised", "alarm_updated", "alarm_acknowledged", "alarm_handled", "alarm_cleared"]) {
      VW.subscribeEvents(type, (event) => {
        const record = event.data;
        if (rows.has(record.id) || rows.has("ref:" + record.ref) || (type === "alarm_raised" && matches(record))) render(record, type === "alarm_raised");
      });
    }
    VW.whenConnected(loadEvents);
  });
})();
