// An automation's versions: who changed it and when, what changed (a line diff of the stored
// texts, jsdiff from npm), and a rollback behind a confirmation. The hub keeps the texts
// (docs/automations.md); a rollback puts one back verbatim and is itself a new version.
"use strict";

window.VWAutoVersions = (function () {
  const { t, api, el, fmtDateTime } = VW;

  /** Old text against new, line by line: removed lines red, added lines green. */
  function diffView(oldText, newText) {
    if (!oldText || !newText || !window.Diff) return el("pre", { class: "diff" }, newText || oldText || "");
    const lines = [];
    for (const part of Diff.diffLines(oldText, newText)) {
      const mark = part.added ? "+" : part.removed ? "-" : " ";
      const tag = part.added ? "ins" : part.removed ? "del" : "span";
      for (const line of part.value.replace(/\n$/, "").split("\n")) lines.push(el(tag, {}, mark + " " + line));
    }
    return el("pre", { class: "diff", "aria-label": t("changes") }, lines);
  }

  /**
   * Fill `box` with the versions of automation `id`; `onRolledBack(saved)` after a rollback.
   * `status(text, kind)` reports.
   */
  async function show(box, id, status, onRolledBack) {
    let rows;
    try {
      rows = await api("GET", "/api/automations/" + encodeURIComponent(id) + "/versions");
    } catch (err) {
      status(err.message, "error");
      return;
    }
    if (!rows.length) {
      box.replaceChildren(el("p", { class: "empty" }, t("no_versions")));
      return;
    }
    const latest = Math.max(...rows.map((r) => r.version));
    box.replaceChildren(el("ul", { class: "versions" }, rows.map((row) => {
      const details = el("details", {}, el("summary", {}, t("changes")), diffView(row.old_text, row.new_text));
      let rollback = null;
      if (row.version !== latest && row.new_text) {
        rollback = el("button", { type: "button", class: "small danger" }, t("rollback_to", { n: row.version }));
        rollback.addEventListener("click", async () => {
          if (!(await VW.confirmAction(t("confirm_rollback", { id, n: row.version })))) return;
          try {
            const saved = await api("POST", "/api/automations/" + encodeURIComponent(id) + "/rollback", { version: row.version });
            status(t("rolled_back", { n: row.version, m: saved.version }), "ok");
            await onRolledBack(saved);
          } catch (err) {
            status(err.message, "error");
          }
        });
      }
      return el("li", { dataset: { version: row.version } },
        el("p", {}, el("strong", {}, t("version_n", { n: row.version })), " · ", t("action_" + row.action),
          " · ", row.by || "—", " · ", el("time", {}, fmtDateTime(row.at)), row.version === latest ? " · " + t("current") : ""),
        details, rollback);
    })));
  }

  return { show };
})();
