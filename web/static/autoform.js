// The automation form: the same document as the YAML editor, as labelled fields. A value the
// person did not touch goes back exactly as it came (its spelling, list or not); kinds and keys
// the form does not know stay in the document and are shown read-only, never dropped.
"use strict";

window.VWAutoForm = (function () {
  const { t, el } = VW;

  const ALARM_EVENTS = ["raised", "acknowledged", "cleared", "handled", "updated"];
  const ALARM_KINDS = ["alarm", "fault", "event"];
  const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const PRIORITIES = ["low", "normal", "high", "urgent"];
  const MODES = ["single", "restart", "queued", "parallel"];

  // [key (dotted inside data), input type, options]
  const TRIGGERS = {
    state: [["entity_id", "entity"], ["from", "text"], ["to", "text"], ["for", "duration"]],
    numeric_state: [["entity_id", "entity"], ["above", "number"], ["below", "number"], ["for", "duration"]],
    alarm: [["on", "checks", ALARM_EVENTS], ["type", "list"], ["kind", "checks", ALARM_KINDS],
      ["device_id", "device"], ["project", "project"]],
    time: [["at", "list"]],
    time_pattern: [["hours", "pattern"], ["minutes", "pattern"], ["seconds", "pattern"]],
    device_offline: [["device_id", "device"], ["for", "duration"]],
  };
  const CONDITIONS = {
    state: [["entity_id", "entity"], ["state", "list"], ["for", "duration"]],
    numeric_state: [["entity_id", "entity"], ["above", "number"], ["below", "number"]],
    time: [["after", "text"], ["before", "text"], ["weekday", "checks", WEEKDAYS]],
    template: [["value_template", "textarea"]],
  };
  const ACTIONS = {
    service: [["action", "service"], ["data", "yaml"]],
    notify: [["action", "notify"], ["data.message", "textarea"], ["data.target", "list"], ["data.title", "text"]],
    workorder: [["data.title", "text"], ["data.description", "textarea"], ["data.device_id", "device"],
      ["data.priority", "select", PRIORITIES], ["data.assignee", "text"], ["data.due", "duration"]],
    delay: [["delay", "duration"]],
  };

  function actionKind(item) {
    if (!item || typeof item !== "object" || Array.isArray(item)) return null;
    const name = "action" in item ? item.action : item.service;
    if (typeof name === "string") {
      if (name === "workorder.create") return "workorder";
      return name.startsWith("notify.") ? "notify" : "service";
    }
    if ("delay" in item && !["wait_for_trigger", "choose", "if", "repeat"].some((k) => k in item)) return "delay";
    return null;
  }

  const SECTIONS = [
    { key: "triggers", single: "trigger", typeKeys: ["trigger", "platform"], kinds: TRIGGERS,
      kindOf: (item) => { const k = item && typeof item === "object" ? item.trigger || item.platform : null; return k in TRIGGERS ? k : null; },
      fresh: (kind) => ({ trigger: kind }) },
    { key: "conditions", single: "condition", typeKeys: ["condition"], kinds: CONDITIONS,
      kindOf: (item) => (item && typeof item === "object" && item.condition in CONDITIONS ? item.condition : null),
      fresh: (kind) => ({ condition: kind }) },
    { key: "actions", single: "action", typeKeys: ["service"], kinds: ACTIONS, kindOf: actionKind,
      fresh: (kind) => (kind === "delay" ? { delay: "" } : kind === "workorder" ? { action: "workorder.create", data: {} }
        : kind === "notify" ? { action: "notify.sms", data: {} } : { action: "" }) },
  ];
  const TOP = [["id", "text"], ["alias", "text"], ["description", "textarea"], ["project", "project"],
    ["mode", "select", MODES], ["max", "number"], ["enabled", "bool"]];
  const TOP_KEYS = new Set([...TOP.map((f) => f[0]), ...SECTIONS.flatMap((s) => [s.key, s.single])]);

  let serial = 0;
  let root = null;
  let doc = {};

  // -- values -------------------------------------------------------------------------------
  const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const dump = (v) => jsyaml.dump(v, { lineWidth: -1, noRefs: true }).trimEnd();

  function getPath(obj, key) {
    return key.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
  }

  function setPath(obj, key, value) {
    const parts = key.split(".");
    let o = obj;
    for (const part of parts.slice(0, -1)) {
      if (!o[part] || typeof o[part] !== "object") o[part] = {};
      o = o[part];
    }
    if (value === undefined) delete o[parts[parts.length - 1]];
    else o[parts[parts.length - 1]] = value;
  }

  /** How a value shows in a text field. */
  function shown(value, type) {
    if (value == null) return "";
    if (type === "yaml" || typeof value === "object" && !Array.isArray(value)) {
      return Object.keys(value).length ? dump(value) : "";
    }
    return Array.isArray(value) ? value.join(", ") : String(value);
  }

  const splitList = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

  /** A field's text back as a value; throws a reason for YAML that does not parse. */
  function parsed(text, type) {
    const trimmed = text.trim();
    if (trimmed === "") return undefined;
    if (type === "number") return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
    if (type === "duration" || type === "pattern") return /^\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
    if (type === "list") return splitList(trimmed);
    if (type === "entity" || type === "device" || type === "project") {
      const parts = splitList(trimmed);
      return parts.length === 1 ? parts[0] : parts;
    }
    if (type === "yaml") {
      try {
        const value = jsyaml.load(trimmed);
        if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error(t("expected_mapping"));
        return value;
      } catch (err) {
        throw err.reason || err.message;
      }
    }
    return type === "textarea" ? text : trimmed;
  }

  // -- building fields ----------------------------------------------------------------------
  const DATALISTS = { entity: "af-entities", device: "af-devices", project: "af-projects", service: "af-services", notify: "af-notify" };

  function fieldLabel(key) { return t("af_" + key.replace("data.", "")); }

  /** One labelled field; `initial` is the value it starts from (kept when left untouched). */
  function field(spec, initial, path) {
    const [key, type, options] = spec;
    const id = "af-" + (++serial);
    const box = el("div", { class: "field", dataset: { path, key, type } });
    let input;
    if (type === "checks" || type === "bool") {
      const values = type === "bool" ? [key] : options;
      const chosen = type === "bool" ? (initial !== false ? [key] : []) : [].concat(initial == null ? [] : initial);
      const group = el("fieldset", { class: "checks", id });
      group.append(el("legend", {}, fieldLabel(key)));
      for (const value of values) {
        group.append(el("label", {}, el("input", { type: "checkbox", value, checked: chosen.includes(value) }),
          " ", type === "bool" ? t("enabled") : t("af_opt_" + value)));
      }
      box.append(group);
      box.dataset.initial = JSON.stringify(chosen);
      box._initial = initial;
      return box;
    }
    if (type === "select") {
      input = el("select", { id }, el("option", { value: "" }, t("af_default")),
        options.map((o) => el("option", { value: o, selected: initial === o }, t("af_opt_" + o))));
      if (initial != null && !options.includes(initial)) input.append(el("option", { value: initial, selected: true }, initial));
    } else if (type === "textarea" || type === "yaml") {
      input = el("textarea", { id, rows: type === "yaml" ? 3 : 2, spellcheck: "false" });
      input.value = shown(initial, type);
    } else {
      input = el("input", {
        id, type: "text", list: DATALISTS[type] || null, autocomplete: "off", spellcheck: "false",
        inputmode: type === "number" ? "decimal" : null,
        placeholder: type === "duration" ? "30s" : type === "pattern" ? "*  /5  0" : null,
      });
      input.value = shown(initial, type);
    }
    box.append(el("label", { for: id }, fieldLabel(key)), input);
    box.dataset.initial = input.value;
    box._initial = initial;
    return box;
  }

  /** A field's value: the original when untouched, else what was typed; throws {box, reason}. */
  function readField(box) {
    const type = box.dataset.type;
    if (type === "checks" || type === "bool") {
      const chosen = [...box.querySelectorAll("input:checked")].map((i) => i.value);
      if (JSON.stringify(chosen) === box.dataset.initial) return box._initial;
      if (type === "bool") return chosen.length > 0;
      return chosen.length ? chosen : undefined;
    }
    const input = box.querySelector("input, select, textarea");
    if (input.value === box.dataset.initial) return box._initial;
    try {
      return parsed(input.value, type);
    } catch (reason) {
      throw { box, reason };
    }
  }

  function extrasBlock(extras) {
    if (!Object.keys(extras).length) return null;
    return el("div", { class: "af-extra" }, el("p", { class: "muted" }, t("af_more_in_yaml")),
      el("pre", {}, dump(extras)));
  }

  // -- rows ---------------------------------------------------------------------------------
  function managedKeys(section, kind) {
    return new Set([...section.typeKeys, ...(section.key === "actions" ? ["action"] : []),
      ...section.kinds[kind].map((f) => f[0].split(".")[0])]);
  }

  /** What of `item` the fields of `kind` do not cover (shown read-only, kept). */
  function extrasOf(section, kind, item) {
    const out = {};
    const fields = section.kinds[kind].map((f) => f[0]);
    const managed = managedKeys(section, kind);
    for (const [key, value] of Object.entries(item)) {
      if (!managed.has(key)) { out[key] = value; continue; }
      const inner = fields.filter((f) => f.startsWith(key + ".")).map((f) => f.slice(key.length + 1));
      if (inner.length && value && typeof value === "object") {
        const rest = Object.fromEntries(Object.entries(value).filter(([k]) => !inner.includes(k)));
        if (Object.keys(rest).length) out[key] = rest;
      }
    }
    return out;
  }

  function row(section, index, item) {
    const path = sectionPath(section) + "[" + index + "]";
    const kind = section.kindOf(item);
    const number = index + 1;
    const title = t("af_row_" + section.single) + " " + number;
    const box = el("fieldset", { class: "af-row", dataset: { path, section: section.key } });
    box._orig = item;
    box._kind = kind;
    box.append(el("legend", {}, title));
    const remove = el("button", { type: "button", class: "small", "aria-label": t("af_remove") + " " + title }, "✕ " + t("af_remove"));
    remove.addEventListener("click", () => { rerender((d) => listOf(d, section).splice(index, 1)); });
    if (kind === null) {
      // A kind the form does not know: the YAML as it is, read-only, kept when saving.
      box._readonly = true;
      box.append(el("p", { class: "muted" }, t("af_unknown_kind")), el("pre", { class: "af-readonly" }, dump(item)), remove);
      return box;
    }
    const id = "af-" + (++serial);
    const select = el("select", { id, class: "af-kind" },
      Object.keys(section.kinds).map((k) => el("option", { value: k, selected: k === kind }, t("af_kind_" + section.single + "_" + k))));
    select.addEventListener("change", () => {
      const fresh = row(section, index, section.fresh(select.value));
      box.replaceWith(fresh);
      fresh.querySelector("select.af-kind").focus();
    });
    box.append(el("div", { class: "field" }, el("label", { for: id }, t("af_kind_label")), select));
    const fields = el("div", { class: "af-fields" });
    for (const spec of section.kinds[kind]) fields.append(field(spec, getPath(item, spec[0]), path + "." + spec[0]));
    box.append(...[fields, extrasBlock(extrasOf(section, kind, item)), remove].filter(Boolean));
    return box;
  }

  function readRow(section, box) {
    if (box._readonly) return box._orig;
    const kind = box.querySelector("select.af-kind").value;
    const out = clone(box._orig) || section.fresh(kind);
    for (const f of box.querySelectorAll(".af-fields > .field")) setPath(out, f.dataset.key, readField(f));
    if (out.data && typeof out.data === "object" && !Object.keys(out.data).length && !(box._orig || {}).data) delete out.data;
    return out;
  }

  // -- the whole form -----------------------------------------------------------------------
  /** The doc's key for a section: `triggers`, or `trigger` when the YAML says it so. */
  function sectionPath(section) {
    return section.single in doc && !(section.key in doc) ? section.single : section.key;
  }

  function listOf(d, section) {
    const key = section.single in d && !(section.key in d) ? section.single : section.key;
    if (!Array.isArray(d[key])) d[key] = d[key] == null ? [] : [d[key]];
    return d[key];
  }

  function render(newDoc, options) {
    doc = newDoc;
    const opts = options || {};
    const top = el("div", { class: "af-top" });
    for (const spec of TOP) {
      if (spec[0] === "project") {
        top.append(field(spec, doc.project, "project"));
        continue;
      }
      const box = field(spec, doc[spec[0]], spec[0]);
      if (spec[0] === "id" && opts.fixedId) box.querySelector("input").readOnly = true;
      top.append(box);
    }
    const extras = Object.fromEntries(Object.entries(doc).filter(([k]) => !TOP_KEYS.has(k)));
    const parts = [top, extrasBlock(extras)];
    for (const section of SECTIONS) {
      const items = section.key in doc || section.single in doc ? [].concat(doc[sectionPath(section)] ?? []) : [];
      const add = el("button", { type: "button", class: "small af-add", dataset: { section: section.key } }, "＋ " + t("af_add_" + section.single));
      add.addEventListener("click", () => {
        rerender((d) => listOf(d, section).push(section.fresh(Object.keys(section.kinds)[0])));
        const rows = root.querySelectorAll(`.af-row[data-section="${section.key}"]`);
        if (rows.length) rows[rows.length - 1].querySelector("select, input").focus();
      });
      parts.push(el("section", { class: "af-section", dataset: { section: section.key } },
        el("h3", {}, t("af_" + section.key)), items.map((item, i) => row(section, i, item)), add));
    }
    root.replaceChildren(...parts.filter(Boolean));
    showMode();
  }

  function showMode() {
    const mode = root.querySelector('.field[data-key="mode"] select');
    const max = root.querySelector('.field[data-key="max"]');
    const sync = () => { max.hidden = !["queued", "parallel"].includes(mode.value); };
    mode.addEventListener("change", sync);
    sync();
  }

  /** The form as one automation; throws [{path, reason, box}] for fields that do not parse. */
  function read() {
    const out = clone(doc) || {};
    const errors = [];
    for (const box of root.querySelectorAll(".af-top > .field")) {
      try {
        setPath(out, box.dataset.key, readField(box));
      } catch (err) {
        errors.push({ path: box.dataset.path, reason: err.reason, box });
      }
    }
    for (const section of SECTIONS) {
      const rows = [...root.querySelectorAll(`.af-row[data-section="${section.key}"]`)];
      const key = sectionPath(section);
      const items = [];
      for (const box of rows) {
        try {
          items.push(readRow(section, box));
        } catch (err) {
          errors.push({ path: err.box.dataset.path, reason: err.reason, box: err.box });
        }
      }
      const single = doc[key] != null && !Array.isArray(doc[key]);
      if (single && items.length === 1 && JSON.stringify(items[0]) === JSON.stringify(doc[key])) continue;  // `trigger: {…}` stays one
      if (items.length || key in out) out[key] = items;
    }
    if (errors.length) throw errors;
    return out;
  }

  function rerender(change) {
    const fixedId = root.querySelector('.field[data-key="id"] input').readOnly;
    const next = read();
    change(next);
    render(next, { fixedId });
  }

  // -- errors next to their field -----------------------------------------------------------
  function clearErrors() {
    for (const node of root.querySelectorAll(".field-error")) node.remove();
    for (const node of root.querySelectorAll("[aria-invalid=true]")) {
      node.removeAttribute("aria-invalid");
      node.removeAttribute("aria-describedby");
    }
  }

  /** Put each error beside the field its path names (or the row holding it); the rest back. */
  function showErrors(errors) {
    clearErrors();
    const placed = [];
    const boxes = [...root.querySelectorAll("[data-path]")];
    for (const error of errors) {
      const path = error.path || "";
      let best = null;
      for (const box of boxes) {
        const p = box.dataset.path;
        if (p === path || path.startsWith(p + ".") || path.startsWith(p + "[")) {
          if (!best || p.length > best.dataset.path.length) best = box;
        }
      }
      if (!best) continue;
      const id = "af-err-" + (++serial);
      const note = el("p", { class: "field-error", id, role: "alert" },
        best.dataset.path === path ? "" : el("code", {}, path.slice(best.dataset.path.length).replace(/^\./, ""), "："),
        error.reason);
      const control = best.matches(".field") ? best.querySelector("input, select, textarea, fieldset") : best;
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", id);
      if (best.matches(".af-row")) best.querySelector("legend").after(note);
      else best.append(note);
      placed.push(error);
    }
    const first = root.querySelector("[aria-invalid=true]");
    if (first) first.focus();
    return errors.filter((e) => !placed.includes(e));
  }

  /** Entity, device, project and service choices for the pickers (datalists). */
  async function loadChoices() {
    const lists = {};
    for (const id of Object.values(DATALISTS)) {
      lists[id] = document.getElementById(id) || document.body.appendChild(el("datalist", { id }));
    }
    const option = (value, label) => el("option", { value }, label && label !== value ? label : null);
    const [states, devices, projects, services] = await Promise.all([
      VW.api("GET", "/api/states").catch(() => []), VW.api("GET", "/api/devices").catch(() => []),
      VW.api("GET", "/api/projects").catch(() => []), VW.api("GET", "/api/services").catch(() => []),
    ]);
    lists["af-entities"].replaceChildren(...states.map((s) => option(s.entity_id, (s.attributes || {}).friendly_name)));
    lists["af-devices"].replaceChildren(...devices.map((d) => option(d.id, d.name)));
    const flat = (nodes) => nodes.flatMap((p) => [p, ...flat(p.children || [])]);
    lists["af-projects"].replaceChildren(...flat(projects).map((p) => option(p.id, p.name)));
    const names = services.flatMap((d) => Object.keys(d.services).map((s) => d.domain + "." + s));
    lists["af-services"].replaceChildren(...names.map((n) => option(n)));
    lists["af-notify"].replaceChildren(...names.filter((n) => n.startsWith("notify.")).map((n) => option(n)));
  }

  function mount(node) {
    root = node;
    loadChoices();
  }

  return { mount, render, read, showErrors, clearErrors, dump };
})();
