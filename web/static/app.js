// Voltwatch live page: one websocket, no polling. States and device conditions stream in.
// Signed in by the session cookie (set by /login), which the websocket upgrade carries; an API
// token from `/?token=…` is kept in localStorage and used instead when there is one.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    localStorage.setItem("voltwatch-token", params.get("token"));
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  const rows = new Map();
  const tbody = () => document.getElementById("states");
  const fmtTime = (iso) => new Date(iso).toLocaleTimeString(document.body.dataset.lang);
  let csrf = null;
  let leaving = false;

  function token() { return localStorage.getItem("voltwatch-token"); }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token()) headers["Authorization"] = "Bearer " + token();
    else if (csrf) headers["X-CSRF-Token"] = csrf;
    return headers;
  }

  function toLogin() {
    // Once: signing out closes the websocket (4001) while the logout request is still
    // answering, and a second navigation would abort the first (ERR_ABORTED).
    if (leaving) return;
    leaving = true;
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  // htmx requests carry the same credentials as the websocket.
  document.addEventListener("htmx:configRequest", (ev) => {
    Object.assign(ev.detail.headers, authHeaders());
  });

  async function whoami() {
    const response = await fetch("/api/auth/me", { headers: authHeaders(), credentials: "same-origin" });
    if (!response.ok) return;
    const me = await response.json();
    csrf = me.csrf_token;
    document.getElementById("whoami").textContent = me.name + " · " + me.role;
    document.getElementById("logout").hidden = me.via !== "session";
  }

  async function logout() {
    await fetch("/api/auth/logout", {
      method: "POST", headers: authHeaders(), credentials: "same-origin",
    });
    toLogin();
  }

  function render(state) {
    let tr = rows.get(state.entity_id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.entity = state.entity_id;
      for (let i = 0; i < 4; i++) tr.appendChild(document.createElement("td"));
      rows.set(state.entity_id, tr);
      const sorted = [...rows.keys()].sort();
      const next = rows.get(sorted[sorted.indexOf(state.entity_id) + 1]);
      tbody().insertBefore(tr, next || null);
      document.getElementById("count").textContent = "(" + rows.size + ")";
    }
    const attrs = state.attributes || {};
    const unit = attrs.unit_of_measurement ? " " + attrs.unit_of_measurement : "";
    tr.children[0].textContent = attrs.device_id || "";
    tr.children[1].textContent = attrs.friendly_name || state.entity_id;
    if (attrs.weak === true) {
      // A DTU that registers by IMEI alone: anyone who reads its label could claim it.
      const badge = document.createElement("span");
      badge.className = "badge weak";
      badge.textContent = document.body.dataset.weak;
      tr.children[1].append(" ", badge);
    }
    tr.children[2].textContent = state.state + unit;
    tr.children[2].className = state.state === "unavailable" ? "unavailable" : "";
    tr.children[3].textContent = fmtTime(state.last_updated);
  }

  function remove(entityId) {
    const tr = rows.get(entityId);
    if (tr) { tr.remove(); rows.delete(entityId); }
  }

  function condition(data, timeFired) {
    const li = document.createElement("li");
    const lang = document.body.dataset.lang;
    const message = (lang === "en" ? data.message_en : data.message_zh) || data.message || data.type;
    li.className = (data.kind || "event") + (data.active === false ? " cleared" : "");
    li.textContent = new Date(timeFired * 1000).toLocaleString(lang) + "  " +
      (data.device_id || "") + "  " + message + (data.active === false ? " ✓" : "");
    const list = document.getElementById("condition-list");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 50) list.lastChild.remove();
  }

  function connect() {
    const conn = document.getElementById("conn");
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/websocket");
    let id = 0;
    let authed = false;
    const send = (msg) => { msg.id = ++id; ws.send(JSON.stringify(msg)); return id; };
    let statesId = 0, subId = 0, condId = 0;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "auth_required") {
        // The session cookie did not sign us in; an API token may.
        if (token()) ws.send(JSON.stringify({ type: "auth", access_token: token() }));
        else { ws.close(); toLogin(); }
      } else if (msg.type === "auth_invalid") {
        localStorage.removeItem("voltwatch-token");
        ws.close();
        toLogin();
      } else if (msg.type === "auth_ok") {
        authed = true;
        conn.textContent = conn.dataset.ok; conn.classList.add("ok");
        whoami().finally(() => document.body.dispatchEvent(new Event("vw:authed")));
        statesId = send({ type: "get_states" });
        subId = send({ type: "subscribe_states" });
        condId = send({ type: "subscribe_events", event_type: "device_condition" });
      } else if (msg.type === "result" && msg.id === statesId && msg.success) {
        msg.result.forEach(render);
      } else if (msg.type === "event" && msg.id === subId) {
        if (msg.event.new_state) render(msg.event.new_state); else remove(msg.event.entity_id);
      } else if (msg.type === "event" && msg.id === condId) {
        condition(msg.event.data, msg.event.time_fired);
      }
    };
    ws.onclose = (ev) => {
      conn.textContent = conn.dataset.bad; conn.classList.remove("ok");
      if (leaving) return;
      if (ev.code === 4001) { toLogin(); return; }  // signed out elsewhere
      if (authed) setTimeout(connect, 3000);  // reconnect after a hub restart
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("logout").addEventListener("click", logout);
    connect();
  });
})();
