// 自动化 Automations: list, enable/disable, an editor with two views of one document (a form,
// autoform.js, and the YAML; switching converts), the hub's validation messages next to the
// field they name, versions with rollback (autoversions.js), traces and a dry run over the
// last 24 h of recorded history.
"use strict";

(function () {
  const { t, api, el, fmtDateTime } = VW;
  let editing = null;  // automation id, or "" for a new one
  let view = "pane-form";  // the editor's view: pane-form | pane-yaml | pane-versions
  let loading = false;  // views switched by the editor itself: no conversion
  let baseDoc = null;  // the document the YAML text said when the form was last filled from it
  const VIEW_KEY = "voltwatch-automation-view";
  const NEW_TEMPLATE = [
    "- id: new_automation",
    "  alias: " + t("new_automation"),
    "  triggers:",
    "    - trigger: numeric_state",
    "      entity_id: sensor.arcm_1_residual_current",
    "      above: 500",
    "  actions:",
    "    - action: notify.sms",
    "      data: {message: \"{{ trigger.to_state.state }} mA\"}",
    "",
  ].join("\n");

  function status(id, text, kind) { VW.show(document.getElementById(id), text, kind); }

  // `!secret name` stays the string "!secret name": the hub resolves it and writes the tag
  // back, so the editor never sees or sends a secret's value.
  const SCHEMA = jsyaml.DEFAULT_SCHEMA.extend([new jsyaml.Type("!secret", {
    kind: "scalar",
    resolve: (data) => typeof data === "string" && data.trim() !== "",
    construct: (data) => "!secret " + data.trim(),
  })]);

  /** The textarea's YAML as one automation object; throws with the line of a syntax error. */
  function parse(text) {
    let data;
    try {
      data = jsyaml.load(text, { schema: SCHEMA });
    } catch (err) {
      const line = err.mark ? err.mark.line + 1 : "?";
      throw [{ path: t("line_n", { n: line }), reason: err.reason || err.message }];
    }
    if (Array.isArray(data) && data.length === 1) data = data[0];
    if (!data || typeof data !== "object" || Array.isArray(data)) {
      throw [{ path: "", reason: t("expected_one_automation") }];
    }
    return data;
  }

  const errorPath = (d) => (Array.isArray(d.path) ? d.path.join(".") : d.path || "");
  // The hub's reasons start with the automation they concern; the editor already says which.
  const errorReason = (d) => String(d.reason || d.message || "").replace(/^automation (?:'[^']*'|without id): /, "");

  /** Errors next to their form field when the form is shown; the rest (and YAML's) listed. */
  function showErrors(errors) {
    const list = document.getElementById("editor-errors");
    const text = document.getElementById("editor-text");
    const rest = view === "pane-form" ? VWAutoForm.showErrors(errors) : errors;
    if (view !== "pane-form") VWAutoForm.clearErrors();
    list.replaceChildren(...rest.map((e) => el("li", {}, e.path ? el("code", {}, e.path) : null, e.path ? "：" : "", e.reason || e.message)));
    text.setAttribute("aria-invalid", errors.length && view === "pane-yaml" ? "true" : "false");
  }

  /** Key order does not make a different automation. */
  function canonical(value) {
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  /** The document as the current view holds it; throws a list of errors. */
  function currentDoc() {
    if (view === "pane-form") return VWAutoForm.read();
    return parse(document.getElementById("editor-text").value);
  }

  /** Switching views converts; a document that does not parse keeps the current view. */
  function leaveView(from, to) {
    if (!loading && from !== "pane-versions") {
      try {
        if (from === "pane-yaml") {
          baseDoc = parse(document.getElementById("editor-text").value);
          VWAutoForm.render(baseDoc, { fixedId: Boolean(editing) });
        } else {
          const doc = VWAutoForm.read();
          // Untouched, the text stays as written (comments and all); changed, it is the form's.
          if (canonical(doc) !== canonical(baseDoc)) {
            document.getElementById("editor-text").value = jsyaml.dump([doc], { lineWidth: -1, noRefs: true });
            baseDoc = doc;
          }
        }
      } catch (errors) {
        showErrors(errors);
        return false;
      }
      showErrors([]);
    }
    view = to;
    if (to === "pane-versions") loadVersions();
    else if (!loading) localStorage.setItem(VIEW_KEY, to);
    return true;
  }

  /** Show a view; `convert` false when both views already hold the same document. */
  function selectView(pane, convert) {
    loading = !convert;
    try {
      document.querySelector(`#editor-tabs [aria-controls="${pane}"]`).click();
    } finally {
      loading = false;
    }
  }

  /** Both views filled from `text`; YAML that does not parse opens in the YAML view. */
  function fill(text) {
    document.getElementById("editor-text").value = text;
    try {
      baseDoc = parse(text);
      VWAutoForm.render(baseDoc, { fixedId: Boolean(editing) });
    } catch (errors) {
      baseDoc = null;
      selectView("pane-yaml", false);
      showErrors(errors);
    }
  }

  /** What automations.yaml now says about the automation being edited, comments included. */
  async function reload() {
    const one = await api("GET", "/api/automations/" + encodeURIComponent(editing));
    fill(one.yaml || jsyaml.dump([one.config]));
    if (view === "pane-versions") loadVersions();
  }

  function loadVersions() {
    if (!editing) {
      document.getElementById("version-list").replaceChildren(el("p", { class: "empty" }, t("no_versions")));
      return;
    }
    VWAutoVersions.show(document.getElementById("version-list"), editing,
      (text, kind) => status("editor-status", text, kind), async () => { await reload(); loadList(); });
  }

  async function save() {
    let data;
    try {
      data = currentDoc();
    } catch (errors) {
      showErrors(errors);
      return;
    }
    showErrors([]);
    try {
      let saved;
      if (view === "pane-yaml") {
        // The text as typed, comments included: the hub writes it into automations.yaml.
        const id = editing || (data && data.id);
        if (!id) throw [{ path: "id", reason: t("yaml_needs_id") }];
        saved = await api("PUT", "/api/automations/" + encodeURIComponent(id) + "/yaml",
          { yaml: document.getElementById("editor-text").value });
      } else {
        saved = editing
          ? await api("PUT", "/api/automations/" + encodeURIComponent(editing), data)
          : await api("POST", "/api/automations", data);
      }
      editing = saved.id;
      document.getElementById("editor-id").textContent = saved.id;
      document.getElementById("editor-dryrun").disabled = false;
      document.getElementById("editor-traces").disabled = false;
      document.getElementById("tab-versions").disabled = false;
      // What the file now says (comments kept by the hub) is what both views show.
      await reload();
      status("editor-status", t("saved_version", { n: saved.version }), "ok");
      loadList();
    } catch (err) {
      if (Array.isArray(err)) { showErrors(err); return; }
      showErrors(err.details && err.details.length
        ? err.details.map((d) => ({ path: errorPath(d), reason: errorReason(d) }))
        : [{ path: "", reason: err.message }]);
      status("editor-status", "");
    }
  }

  async function open(id) {
    editing = id;
    const box = document.getElementById("editor");
    box.hidden = false;
    showErrors([]);
    status("editor-status", "");
    document.getElementById("editor-output").replaceChildren();
    document.getElementById("editor-id").textContent = id || t("new_automation");
    baseDoc = null;
    if (!id) {
      fill(NEW_TEMPLATE);
    } else {
      try {
        await reload();
      } catch (err) {
        status("editor-status", err.message, "error");
      }
    }
    const wanted = localStorage.getItem(VIEW_KEY) || "pane-form";
    selectView(baseDoc ? wanted : "pane-yaml", false);
    document.getElementById("tab-versions").disabled = !id;
    document.getElementById("editor-dryrun").disabled = !id;
    document.getElementById("editor-traces").disabled = !id;
    const first = view === "pane-form" ? document.querySelector("#auto-form input:not([readonly]), #auto-form select")
      : document.getElementById("editor-text");
    if (first) first.focus();
  }

  async function toggle(one, box) {
    box.disabled = true;
    try {
      const full = await api("GET", "/api/automations/" + encodeURIComponent(one.id));
      const data = full.yaml ? parse(full.yaml) : full.config;
      data.enabled = box.checked;
      await api("PUT", "/api/automations/" + encodeURIComponent(one.id), data);
      status("auto-status", t(box.checked ? "automation_enabled" : "automation_disabled", { id: one.id }), "ok");
    } catch (err) {
      box.checked = !box.checked;
      status("auto-status", Array.isArray(err) ? err[0].reason : err.message, "error");
    }
    box.disabled = false;
  }

  async function loadList() {
    let list;
    try {
      list = await api("GET", "/api/automations");
    } catch (err) {
      status("auto-status", err.message, "error");
      return;
    }
    document.getElementById("auto-rows").replaceChildren(...list.map((one) => {
      const box = el("input", { type: "checkbox", checked: one.enabled !== false, "aria-label": t("enabled") + " " + one.id });
      box.addEventListener("change", () => toggle(one, box));
      const edit = el("button", { type: "button", class: "small" }, t("edit"));
      edit.addEventListener("click", () => open(one.id));
      return el("tr", { dataset: { automation: one.id } }, el("td", {}, box), el("td", {}, el("code", {}, one.id)),
        el("td", {}, one.alias || ""), el("td", {}, one.project || "—"),
        el("td", {}, one.last_triggered ? fmtDateTime(one.last_triggered) : "—"), el("td", {}, edit));
    }));
    if (!list.length) status("auto-status", t("no_automations"));
  }

  async function traces() {
    const out = document.getElementById("editor-output");
    try {
      const rows = await api("GET", "/api/automations/" + encodeURIComponent(editing) + "/traces");
      out.replaceChildren(el("h3", {}, t("traces")), rows.length ? el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", {}, t("time")), el("th", {}, t("outcome")), el("th", {}, t("steps")), el("th", {}, t("error")))),
        el("tbody", {}, rows.map((r) => el("tr", { class: r.outcome === "error" ? "alarm" : "" },
          el("td", {}, fmtDateTime(r.started_at)), el("td", {}, r.outcome),
          el("td", {}, (r.steps || []).map((s) => s.path || s.action || "").join(", ")), el("td", {}, r.error || "")))))
        : el("p", { class: "empty" }, t("no_traces")));
    } catch (err) {
      status("editor-status", err.message, "error");
    }
  }

  async function dryRun() {
    const out = document.getElementById("editor-output");
    const end = new Date();
    const start = new Date(end.getTime() - 24 * 3600 * 1000);
    try {
      const result = await api("POST", "/api/automations/" + encodeURIComponent(editing) + "/dry_run",
        { start: start.toISOString(), end: end.toISOString() });
      out.replaceChildren(el("h3", {}, t("dry_run_24h")),
        el("p", { class: "dry-run-summary" }, t("dry_run_result", { n: result.fired.length, runs: result.runs.length })),
        el("ul", {}, result.runs.slice(0, 50).map((run) => el("li", {}, fmtDateTime(run.at), " — ",
          run.would_fire ? t("would_fire") : t("would_not_fire")))),
        result.notes && result.notes.length ? el("ul", { class: "muted" }, result.notes.map((n) => el("li", {}, n))) : null);
    } catch (err) {
      status("editor-status", err.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("auto-new").addEventListener("click", () => open(""));
    document.getElementById("editor-save").addEventListener("click", save);
    document.getElementById("editor-traces").addEventListener("click", traces);
    document.getElementById("editor-dryrun").addEventListener("click", dryRun);
    document.getElementById("editor-close").addEventListener("click", () => { document.getElementById("editor").hidden = true; });
    document.getElementById("editor").addEventListener("keydown", (ev) => {
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "s") { ev.preventDefault(); save(); }
    });
    document.getElementById("auto-form").addEventListener("submit", (ev) => { ev.preventDefault(); save(); });
    VWAutoForm.mount(document.getElementById("auto-form"));
    VW.tabs(document.getElementById("editor-tabs"), null, leaveView);
    loadList();
  });
})();
