// Voltwatch pages share this: the boot data, the JSON API with the caller's credentials, one
// websocket per page (subscriptions survive a reconnect), times in the hub's time zone, and the
// alarm banner with its sound. No polling: everything live arrives over the websocket.
"use strict";

window.VW = (function () {
  const boot = JSON.parse(document.getElementById("vw-boot").textContent);
  const TOKEN_KEY = "voltwatch-token";
  const lang = boot.lang;
  let leaving = false;

  // -- credentials --------------------------------------------------------------------------
  // An API token from `?token=` is kept (localStorage for the API, a cookie for the next page)
  // and taken out of the address bar.
  (function keepToken() {
    const params = new URLSearchParams(location.search);
    const given = params.get("token");
    if (!given) return;
    localStorage.setItem(TOKEN_KEY, given);
    document.cookie = "voltwatch_token=" + encodeURIComponent(given) + "; path=/; SameSite=Strict";
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  })();

  function token() {
    // A session (signed in by the form) wins over an old token.
    if (boot.me && boot.me.via === "session") return null;
    return localStorage.getItem(TOKEN_KEY);
  }

  function forgetToken() {
    localStorage.removeItem(TOKEN_KEY);
    document.cookie = "voltwatch_token=; path=/; max-age=0; SameSite=Strict";
  }

  function toLogin() {
    if (leaving) return;
    leaving = true;
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    const tok = token();
    if (tok) out["Authorization"] = "Bearer " + tok;
    else if (boot.me && boot.me.csrf) out["X-CSRF-Token"] = boot.me.csrf;
    return out;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || ("HTTP " + status));
      this.status = status;
      this.details = (body && body.details) || [];
    }
  }

  /** The JSON API: resolves to the parsed body, rejects with ApiError (status, message, details). */
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: headers() };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (response.status === 401) { forgetToken(); toLogin(); }
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, typeof data === "object" ? data : { error: data });
    return data;
  }

  /** A file from the API (CSV) saved by the browser, with the same credentials as api(). */
  async function download(path, filename) {
    const response = await fetch(path, { credentials: "same-origin", headers: headers() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const url = URL.createObjectURL(await response.blob());
    const a = el("a", { href: url, download: filename });
    document.body.appendChild(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(url);
  }

  /** A multipart upload (a photo) with the same credentials as api(); resolves to the JSON answer. */
  async function upload(path, formData) {
    const response = await fetch(path, { method: "POST", credentials: "same-origin", headers: headers(), body: formData });
    if (response.status === 401) { forgetToken(); toLogin(); }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  /** An object URL for an authenticated image (an <img src> would not send a bearer token). */
  async function blobUrl(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: headers() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    return URL.createObjectURL(await response.blob());
  }

  // -- words and times ----------------------------------------------------------------------
  function t(key, vars) {
    let text = boot.words[key] || key;
    if (vars) for (const [k, v] of Object.entries(vars)) text = text.split("{" + k + "}").join(String(v));
    return text;
  }

  const dateTime = new Intl.DateTimeFormat(lang, {
    timeZone: boot.tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const timeOnly = new Intl.DateTimeFormat(lang, {
    timeZone: boot.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const toDate = (v) => (v instanceof Date ? v : typeof v === "number" ? new Date(v * 1000) : new Date(v));
  const fmtDateTime = (v) => (v == null || v === "" ? "" : dateTime.format(toDate(v)));
  const fmtTime = (v) => (v == null || v === "" ? "" : timeOnly.format(toDate(v)));

  /** "YYYY-MM" of now in the hub's time zone. */
  function hubMonth() {
    const parts = new Intl.DateTimeFormat("en-CA", { timeZone: boot.tz, year: "numeric", month: "2-digit" })
      .formatToParts(new Date());
    const get = (type) => parts.find((p) => p.type === type).value;
    return get("year") + "-" + get("month");
  }

  // Reading order of a device's values: the fire risks first, then the supply.
  const VALUE_ORDER = [/_residual_current$/, /_temperature/, /_breaker$/, /_arc_count$/, /_smoke/,
    /_voltage_[abc]$/, /_current_[abc]$/, /_power$/, /_energy$/, /_frequency$/, /_thd_/];

  /** Sort key of an entity among its device's values. */
  function valueRank(entityId) {
    const index = VALUE_ORDER.findIndex((pattern) => pattern.test(entityId));
    return String(index < 0 ? VALUE_ORDER.length : index).padStart(2, "0") + entityId;
  }

  /** The instant of a wall-clock time ("YYYY-MM-DD", "HH:MM:SS") in the hub's time zone. */
  function hubInstant(day, time) {
    const [y, mo, d] = day.split("-").map(Number);
    const [h, mi, se] = (time || "00:00:00").split(":").map(Number);
    const wall = Date.UTC(y, mo - 1, d, h, mi, se || 0);
    const offsetAt = (ms) => {
      const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
        timeZone: boot.tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
        hour: "numeric", minute: "numeric", second: "numeric",
      }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
      return Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second) - ms;
    };
    // Twice: the offset at the guess may differ from the offset at the answer (DST).
    let instant = wall - offsetAt(wall);
    instant = wall - offsetAt(instant);
    return new Date(instant);
  }

  function typeWord(type) { return boot.types[type] || type; }

  function message(record) {
    const text = lang === "en" ? record.message_en : record.message_zh || record.message;
    return text || record.message || typeWord(record.type);
  }

  function stateText(state) {
    if (!state) return "";
    const attrs = state.attributes || {};
    if (state.state === "unavailable") return t("unavailable");
    if (state.state === "unknown") return t("unknown");
    const unit = attrs.unit_of_measurement ? " " + attrs.unit_of_measurement : "";
    if (state.entity_id.startsWith("switch.") && /breaker/.test(state.entity_id)) {
      return state.state === "on" ? t("breaker_closed") : t("breaker_tripped");
    }
    if (state.entity_id.startsWith("binary_sensor.")) {
      if (/_online$/.test(state.entity_id)) return state.state === "on" ? t("online") : t("offline");
      return state.state === "on" ? t("on") : t("off");
    }
    return state.state + unit;
  }

  // -- DOM ----------------------------------------------------------------------------------
  /** el("td", {class: "x", dataset: {id: 1}, onclick: fn}, "text", childNode, ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function show(node, text, kind) {
    node.textContent = text;
    node.className = "notice " + (kind || "");
    node.hidden = !text;
  }

  /** The page's confirmation <dialog>: resolves true only on the explicit confirm button. */
  function confirmAction(text) {
    const dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      document.getElementById("confirm-cancel").focus();
    });
  }

  /** Tabs: buttons [role=tab][aria-controls] inside `bar`; arrow keys move between them. */
  function tabs(bar, onChange, canLeave) {
    const list = [...bar.querySelectorAll("[role=tab]")];
    let current = null;
    function select(tab, focus) {
      // canLeave(from, to) === false keeps the current tab (e.g. a document that does not parse)
      const to = tab.getAttribute("aria-controls");
      if (current && current !== to && canLeave && canLeave(current, to) === false) return;
      current = to;
      for (const other of list) {
        const on = other === tab;
        other.setAttribute("aria-selected", String(on));
        other.tabIndex = on ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) tab.focus();
      history.replaceState(null, "", "#" + tab.getAttribute("aria-controls"));
      if (onChange) onChange(tab.getAttribute("aria-controls"));
    }
    bar.addEventListener("click", (ev) => {
      const tab = ev.target.closest("[role=tab]");
      if (tab) select(tab, false);
    });
    bar.addEventListener("keydown", (ev) => {
      const index = list.indexOf(document.activeElement);
      if (index < 0) return;
      if (ev.key === "ArrowRight") select(list[(index + 1) % list.length], true);
      else if (ev.key === "ArrowLeft") select(list[(index - 1 + list.length) % list.length], true);
    });
    const wanted = list.find((tab) => "#" + tab.getAttribute("aria-controls") === location.hash);
    select(wanted || list[0], false);
  }

  // -- the websocket ------------------------------------------------------------------------
  const subs = [];
  const pending = new Map();
  let queue = [];
  let sock = null;
  let ready = false;
  let nextId = 0;
  const onConnect = [];

  function send(msg) {
    const copy = Object.assign({}, msg, { id: ++nextId });
    sock.send(JSON.stringify(copy));
    return copy.id;
  }

  /** One command with a result (e.g. get_states): a promise of the result. */
  function request(msg) {
    return new Promise((resolve, reject) => {
      const go = () => pending.set(send(msg), { resolve, reject });
      if (ready) go(); else queue.push(go);
    });
  }

  /** A subscription kept across reconnects; `cb(event)` per message. Returns the unsubscriber. */
  function subscribe(msg, cb) {
    const sub = { msg, cb, id: 0 };
    subs.push(sub);
    if (ready) sub.id = send(msg);
    return () => {
      subs.splice(subs.indexOf(sub), 1);
      if (ready && sub.id) send({ type: "unsubscribe", subscription: sub.id });
    };
  }

  const subscribeStates = (entityIds, cb) =>
    subscribe(entityIds ? { type: "subscribe_states", entity_ids: entityIds } : { type: "subscribe_states" }, cb);
  const subscribeEvents = (eventType, cb) => subscribe({ type: "subscribe_events", event_type: eventType }, cb);
  const getStates = (entityIds) => request(entityIds ? { type: "get_states", entity_ids: entityIds } : { type: "get_states" });

  function connected(ok) {
    const conn = document.getElementById("conn");
    if (!conn) return;
    conn.textContent = ok ? conn.dataset.ok : conn.dataset.bad;
    conn.classList.toggle("ok", ok);
  }

  function connect() {
    sock = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/websocket");
    let authed = false;
    sock.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "auth_required") {
        if (token()) sock.send(JSON.stringify({ type: "auth", access_token: token() }));
        else { sock.close(); toLogin(); }
      } else if (msg.type === "auth_invalid") {
        forgetToken();
        sock.close();
        toLogin();
      } else if (msg.type === "auth_ok") {
        authed = true;
        ready = true;
        connected(true);
        for (const sub of subs) sub.id = send(sub.msg);
        const waiting = queue;
        queue = [];
        waiting.forEach((go) => go());
        onConnect.forEach((fn) => fn());
      } else if (msg.type === "result") {
        const waiter = pending.get(msg.id);
        if (waiter) {
          pending.delete(msg.id);
          if (msg.success) waiter.resolve(msg.result);
          else waiter.reject(new Error((msg.error && msg.error.message) || "error"));
        }
      } else if (msg.type === "event") {
        const sub = subs.find((s) => s.id === msg.id);
        if (sub) sub.cb(msg.event);
      }
    };
    sock.onclose = (ev) => {
      ready = false;
      connected(false);
      for (const waiter of pending.values()) waiter.reject(new Error("disconnected"));
      pending.clear();
      if (leaving) return;
      if (ev.code === 4001) { toLogin(); return; }  // signed out elsewhere
      // Back after a hub restart: the browser's own reconnect delay, not a polling loop.
      if (authed) setTimeout(connect, 3000);
    };
  }

  /** Run `fn` on every (re)connection: pages reload their snapshot there. */
  function whenConnected(fn) {
    onConnect.push(fn);
    if (ready) fn();
  }

  // -- alarm banner and sound ---------------------------------------------------------------
  // Alarm sound has priority over fault sound; mute silences until a new alarm arrives.
  const sound = { ctx: null, nodes: null, kind: "" };

  function stopSound() {
    if (sound.nodes) sound.nodes.forEach((n) => { try { n.stop(); } catch (e) { /* stopped */ } });
    sound.nodes = null;
    sound.kind = "";
    document.body.dataset.sound = "";
  }

  function playSound(kind) {
    if (sound.kind === "alarm" && kind !== "alarm") return;  // the alarm keeps sounding
    stopSound();
    sound.kind = kind;
    document.body.dataset.sound = kind;
    try {
      sound.ctx = sound.ctx || new AudioContext();
      const ctx = sound.ctx;
      // A tone gated by a slow square wave: beeps without a JS timer.
      const tone = ctx.createOscillator();
      tone.frequency.value = kind === "alarm" ? 880 : 440;
      const gate = ctx.createOscillator();
      gate.type = "square";
      gate.frequency.value = kind === "alarm" ? 2 : 0.8;
      const depth = ctx.createGain();
      depth.gain.value = 0.15;
      const out = ctx.createGain();
      out.gain.value = 0.15;
      gate.connect(depth).connect(out.gain);
      tone.connect(out).connect(ctx.destination);
      tone.start();
      gate.start();
      sound.nodes = [tone, gate];
    } catch (e) {
      // No audio device (or not allowed yet): the banner still shows.
    }
  }

  function banner(record) {
    const box = document.getElementById("alarm-banner");
    if (!box) return;
    box.className = "banner " + record.kind;
    const where = [record.device_name || record.device_id, record.location].filter(Boolean).join(" · ");
    document.getElementById("banner-text").textContent =
      t("kind_" + record.kind) + "：" + message(record) + (where ? " — " + where : "");
    box.dataset.alarmId = record.id;
    box.hidden = false;
  }

  function watchAlarms() {
    subscribeEvents("alarm_raised", (event) => {
      const record = event.data;
      if (record.kind !== "alarm" && record.kind !== "fault") return;
      banner(record);
      playSound(record.kind);
    });
    document.getElementById("banner-mute").addEventListener("click", stopSound);
    document.getElementById("banner-close").addEventListener("click", () => {
      stopSound();
      document.getElementById("alarm-banner").hidden = true;
    });
  }

  // -- the shell ------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    const toggle = document.getElementById("nav-toggle");
    toggle.addEventListener("click", () => {
      const open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", String(open));
    });
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async () => {
        leaving = true;
        await api("POST", "/api/auth/logout").catch(() => null);
        location.href = "/login";
      });
    }
    // A signed-in person's language is kept on their user record (it follows them to another
    // browser); the link's ?lang= still switches this browser when that cannot be saved.
    const langSwitch = document.getElementById("lang-switch");
    if (langSwitch && boot.me && boot.me.user) {
      langSwitch.addEventListener("click", async (ev) => {
        ev.preventDefault();
        leaving = true;
        await api("PATCH", "/api/auth/me", { language: langSwitch.hreflang }).catch(() => null);
        location.href = langSwitch.href;
      });
    }
    if (!boot.me) return;
    watchAlarms();
    connect();
  });

  return {
    boot, lang, t, api, download, upload, blobUrl, ApiError, el, show, tabs, confirmAction, fmtDateTime, fmtTime, hubMonth, hubInstant,
    typeWord, message, stateText, valueRank, subscribeStates, subscribeEvents, getStates, whenConnected,
    stopSound,
  };
})();
