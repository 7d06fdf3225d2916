// 远程控制 Remote control: trip / close / reset / mute / self-test and setpoints. Every action
// goes through a confirmation naming the device and where it is, and shows the answer the
// device confirmed (the service answers only after its read-back) or the reason it failed.
"use strict";

(function () {
  const { t, api, el, stateText, fmtTime } = VW;
  const COMMANDS = ["trip", "close", "reset", "mute", "self_test"];
  let devices = [];
  let projects = new Map();
  let services = new Map();  // domain -> Set of service names
  let current = null;
  let unsubscribe = null;
  const param = (name) => VW.boot.words["param_" + name] || name;

  function where(device) {
    return [projects.get(device.project) || device.project, device.area, device.location].filter(Boolean).join(" · ");
  }

  function deviceLabel(device) {
    return (device.name || device.id) + (where(device) ? "（" + where(device) + "）" : "");
  }


  function report(text, ok) {
    VW.show(document.getElementById("control-result"), text, ok ? "ok" : "error");
    document.getElementById("control-log").prepend(
      el("li", { class: ok ? "ok" : "alarm" }, el("time", {}, fmtTime(new Date())), " ", text));
  }

  function describe(service, response) {
    const r = response || {};
    if (service === "set_parameter") return t("result_setpoint", { name: param(r.name), value: r.value + (r.unit || "") });
    if (r.breaker) return t("result_breaker", { state: r.breaker === "tripped" ? t("breaker_tripped") : t("breaker_closed") });
    return t("result_confirmed");
  }

  async function run(service, data, text) {
    const device = current;
    if (!(await VW.confirmAction(text))) return;
    try {
      const answer = await api("POST", "/api/services/" + device.platform + "/" + service,
        Object.assign({ device_id: device.id }, data));
      report(deviceLabel(device) + " — " + t("cmd_" + service) + "：" + describe(service, answer.response), true);
      if (service === "set_parameter") loadSetpoints();
    } catch (err) {
      report(deviceLabel(device) + " — " + t("cmd_" + service) + " " + t("failed") + "：" + err.message, false);
    }
  }

  function renderActions() {
    const box = document.getElementById("control-actions");
    const offered = services.get(current.platform) || new Set();
    const allowed = new Set(VW.boot.me.controls);
    box.replaceChildren(...COMMANDS.filter((s) => offered.has(s) && allowed.has(s)).map((service) => {
      const button = el("button", { type: "button", class: service === "trip" ? "danger" : "", dataset: { service } }, t("cmd_" + service));
      button.addEventListener("click", () =>
        run(service, {}, t("confirm_command", { action: t("cmd_" + service), device: current.name || current.id, where: where(current) || "—" })));
      return button;
    }));
    if (!box.children.length) box.append(el("p", { class: "muted" }, t("no_commands")));
  }

  async function loadSetpoints() {
    const body = document.getElementById("setpoints");
    const status = document.getElementById("setpoints-status");
    body.replaceChildren();
    const offered = services.get(current.platform) || new Set();
    if (!offered.has("read_parameters")) { status.textContent = t("no_setpoints"); return; }
    status.textContent = t("loading");
    let answer;
    try {
      answer = await api("POST", "/api/services/" + current.platform + "/read_parameters", { device_id: current.id });
    } catch (err) {
      status.textContent = err.message;
      return;
    }
    status.textContent = "";
    const may = VW.boot.me.controls.includes("set_parameter") && offered.has("set_parameter");
    const params = (answer.response || {}).parameters || {};
    for (const [name, p] of Object.entries(params)) {
      const input = el("input", { type: "number", step: "any", min: p.min, max: p.max, value: p.value, "aria-label": param(name), disabled: !may });
      const button = el("button", { type: "button", class: "small", disabled: !may }, t("apply"));
      button.addEventListener("click", () => {
        const value = Number(input.value);
        run("set_parameter", { name, value }, t("confirm_setpoint", {
          name: param(name), value: value + (p.unit || ""), device: current.name || current.id, where: where(current) || "—",
        }));
      });
      body.append(el("tr", { dataset: { param: name } },
        el("td", {}, param(name)),
        el("td", {}, p.value == null ? "–" : p.value + (p.unit || "")),
        el("td", {}, p.min != null ? p.min + "–" + p.max + (p.unit || "") : ""),
        el("td", {}, input), el("td", {}, button)));
    }
  }

  function choose(id) {
    current = devices.find((d) => d.id === id) || null;
    document.getElementById("control-panel").hidden = !current;
    if (unsubscribe) { unsubscribe(); unsubscribe = null; }
    if (!current) return;
    history.replaceState(null, "", "?device=" + encodeURIComponent(current.id));
    document.getElementById("control-device-name").textContent = current.name || current.id;
    document.getElementById("control-where").textContent = [current.id, where(current)].filter(Boolean).join(" · ");
    const breaker = current.entities.find((e) => /^switch\..*_breaker$/.test(e));
    const online = current.entities.find((e) => /_online$/.test(e));
    const watched = [breaker, online].filter(Boolean);
    const showState = (state) => {
      if (state.entity_id === breaker) document.getElementById("control-breaker").textContent = stateText(state);
      if (state.entity_id === online) {
        const badge = document.getElementById("control-online");
        badge.textContent = stateText(state);
        badge.className = "badge " + (state.state === "on" ? "ok" : "bad");
      }
    };
    document.getElementById("control-breaker").textContent = "–";
    if (watched.length) {
      unsubscribe = VW.subscribeStates(watched, (event) => event.new_state && showState(event.new_state));
      VW.getStates(watched).then((states) => states.forEach(showState));
    }
    renderActions();
    loadSetpoints();
  }

  async function load() {
    try {
      const [devs, projs, servs] = await Promise.all([api("GET", "/api/devices"), api("GET", "/api/projects"), api("GET", "/api/services")]);
      projects = new Map(projs.map((p) => [p.id, p.name]));
      services = new Map(servs.map((s) => [s.domain, new Set(Object.keys(s.services))]));
      devices = devs.filter((d) => COMMANDS.some((s) => (services.get(d.platform) || new Set()).has(s)));
    } catch (err) {
      VW.show(document.getElementById("control-error"), err.message, "error");
      return;
    }
    const select = document.getElementById("control-device");
    const groups = new Map();
    for (const d of devices) {
      const key = projects.get(d.project) || d.project || "—";
      if (!groups.has(key)) groups.set(key, el("optgroup", { label: key }));
      groups.get(key).append(el("option", { value: d.id }, (d.name || d.id) + (d.location ? " · " + d.location : "")));
    }
    select.append(...groups.values());
    const wanted = new URLSearchParams(location.search).get("device");
    if (wanted && devices.some((d) => d.id === wanted)) {
      select.value = wanted;
      choose(wanted);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("control-device").addEventListener("change", (ev) => choose(ev.target.value));
    VW.whenConnected(() => { if (!devices.length) load(); });
  });
})();
