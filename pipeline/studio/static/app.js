// instructmix studio: the page. Plain browser JavaScript, no build step; it talks to the
// studio server only through the JSON API described in the studio's contract.
"use strict";

(function () {
  const PREVIEW_DELAY_MS = 300;
  const NEW = "__new__";

  const state = {
    sources: [],
    writable: false,
    templatesDir: null,
    source: null, // the GET /api/sources/{name} answer
    templateChoice: NEW, // index into source.templates, or NEW
    baseline: "", // the YAML as loaded or last saved, to tell edits apart
    // sha256 of each file under --templates as this page last read or wrote it; a save sends
    // it so the server can refuse when someone else changed the file meanwhile.
    etags: {},
    variant: null, // the tab the user is looking at, kept across re-renders
    lastGood: null, // last preview that parsed, shown dimmed while the YAML is broken
    seq: 0,
    controller: null,
    timer: null,
    errorLine: null,
    errorWidget: null,
    opening: 0,
    choosing: 0,
  };

  // ---------- small DOM helpers ----------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function setStatus(text, kind) {
    const node = $("status");
    node.textContent = text || "";
    node.className = "status" + (kind ? " " + kind : "");
  }

  function showFatal(text) {
    const node = $("fatal");
    node.textContent = text;
    node.hidden = false;
  }

  function shorten(value, limit) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    if (text === undefined) return "";
    return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
  }

  // ---------- the API ----------

  async function api(path, options) {
    const response = await fetch(path, options);
    let body;
    try {
      body = await response.json();
    } catch (err) {
      if (err.name === "AbortError") throw err;
      body = { error: `the server answered ${response.status} ${response.statusText}` };
    }
    return { ok: response.ok, status: response.status, body };
  }

  function post(path, payload, signal) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
      signal,
    });
  }

  const enc = encodeURIComponent;

  // ---------- the editor ----------

  // Jinja on top of YAML: {{ }}, {% %} and {# #} stand out in any YAML token. Written here
  // rather than taken from CodeMirror's jinja2 mode, which reads a YAML comment (`# ...`) as
  // a Jinja line statement.
  CodeMirror.defineMode("yaml-jinja", function (config) {
    const jinja = {
      startState: () => ({ close: null, comment: false }),
      copyState: (s) => ({ close: s.close, comment: s.comment }),
      token(stream, s) {
        if (s.close) {
          const style = s.comment ? "jinja-comment" : "jinja";
          if (stream.match(s.close)) {
            s.close = null;
            return s.comment ? style : "jinja-delim";
          }
          const at = stream.string.indexOf(s.close, stream.pos);
          if (at === -1) stream.skipToEnd();
          else stream.pos = at;
          return style;
        }
        const open = stream.match(/^\{[{%#]-?/);
        if (open) {
          const kind = open[0][1];
          s.close = kind === "{" ? "}}" : kind === "%" ? "%}" : "#}";
          s.comment = kind === "#";
          return s.comment ? "jinja-comment" : "jinja-delim";
        }
        stream.next();
        while (!stream.eol() && stream.peek() !== "{") stream.next();
        return null;
      },
    };
    return CodeMirror.overlayMode(CodeMirror.getMode(config, "yaml"), jinja, true);
  });

  const editor = CodeMirror($("editor-host"), {
    value: "",
    mode: "yaml-jinja",
    lineNumbers: true,
    lineWrapping: true,
    indentUnit: 2,
    tabSize: 2,
    viewportMargin: Infinity,
    extraKeys: {
      // YAML forbids tabs for indentation.
      Tab: (cm) => cm.replaceSelection("  "),
      "Ctrl-S": () => save(),
      "Cmd-S": () => save(),
    },
  });
  editor.on("change", () => {
    updateDirty();
    schedulePreview();
  });

  function setEditor(yaml) {
    state.baseline = yaml;
    editor.setValue(yaml);
    editor.clearHistory();
    updateDirty();
  }

  function updateDirty() {
    $("dirty").hidden = editor.getValue() === state.baseline;
  }

  // The parse error sits in the editor itself, under the line it names.
  function markErrorLine(message) {
    if (state.errorLine !== null) {
      editor.removeLineClass(state.errorLine, "background", "cm-error-line");
      state.errorLine = null;
    }
    if (state.errorWidget) {
      state.errorWidget.clear();
      state.errorWidget = null;
    }
    const match = message && /line (\d+)/.exec(message);
    if (!match) return;
    const line = Math.min(Number(match[1]) - 1, editor.lineCount() - 1);
    if (line >= 0) {
      editor.addLineClass(line, "background", "cm-error-line");
      state.errorLine = line;
      const note = el("div", { class: "cm-error-note", text: message });
      state.errorWidget = editor.addLineWidget(line, note, { coverGutter: false, noHScroll: true });
    }
  }

  // ---------- sources ----------

  async function loadSources() {
    const { ok, body } = await api("/api/sources");
    if (!ok) {
      showFatal(`Could not list the sources: ${body.error}`);
      return;
    }
    state.sources = body.sources;
    state.writable = Boolean(body.writable);
    state.templatesDir = body.templates_dir || null;
    const picker = clear($("source-picker"));
    picker.append(el("option", { value: "", text: "Choose a source…" }));
    for (const [origin, title] of [["user", "Your sources"], ["builtin", "Built-in"]]) {
      const group = el("optgroup", { label: title });
      for (const src of state.sources.filter((s) => s.origin === origin)) {
        group.append(el("option", { value: src.name, text: sourceOptionText(src) }));
      }
      if (group.children.length) picker.append(group);
    }
    setupSave();
  }

  function sourceOptionText(src) {
    const count = src.templates === 1 ? "1 template" : `${src.templates} templates`;
    return `${src.name} (${count})`;
  }

  async function openSource(name, wantTemplate) {
    abortPreview();
    if (!name) return;
    setStatus(`Opening ${name}…`);
    const ticket = ++state.choosing; // the user may pick another source before this answers
    const { ok, body } = await api(`/api/sources/${enc(name)}`);
    if (ticket !== state.choosing) return;
    if (!ok) {
      setStatus(body.error, "bad");
      return;
    }
    state.source = body;
    state.variant = null;
    state.lastGood = null;
    $("source-picker").value = name;
    showSource(body);
    fillTemplatePicker();
    $("save-file").value = `${name}.yaml`;
    resetSaveMessage();
    const templates = body.templates;
    let choice = templates.length ? 0 : NEW;
    if (wantTemplate === NEW) choice = NEW;
    else if (wantTemplate) {
      const at = templates.findIndex((t) => t.id === wantTemplate);
      if (at >= 0) choice = at;
    }
    $("workbench").hidden = false;
    await openTemplate(choice);
  }

  function labelled(field, value) {
    const names = state.source && state.source.label_names[field];
    if (names && Number.isInteger(value) && value >= 0 && value < names.length) {
      return `${value} (${names[value]})`;
    }
    return value;
  }

  function showSource(src) {
    $("source-panel").hidden = false;
    $("source-title").textContent = src.name;
    $("source-summary").textContent = src.description ? "· " + shorten(src.description, 110) : "";
    $("source-description").textContent = src.description || "";
    const facts = clear($("source-facts"));
    const listed = state.sources.find((s) => s.name === src.name);
    const add = (term, value) => {
      if (value) facts.append(el("dt", { text: term }), el("dd", { text: value }));
    };
    add("Licence", src.license || "not stated");
    add("Task", src.task);
    add("Task type", src.task_type);
    add("Cluster", src.cluster);
    add("Catalog", listed ? (listed.origin === "user" ? "your folder" : "built-in") : null);
    add("Spec file", src.path);

    const features = clear($("features-table"));
    features.append(el("tr", {}, el("th", { text: "field" }), el("th", { text: "type" })));
    for (const [field, type] of Object.entries(src.features)) {
      const names = src.label_names[field];
      features.append(
        el(
          "tr",
          {},
          el("td", {}, el("code", { text: field })),
          el(
            "td",
            {},
            names ? "labels: " : type,
            names ? names.map((n, i) => el("span", { class: "chip", text: `${i} ${n}` })) : null
          )
        )
      );
    }

    const fields = Object.keys(src.features);
    const rows = clear($("rows-table"));
    $("rows-count").textContent = `(${src.rows.length})`;
    rows.append(el("tr", {}, fields.map((f) => el("th", { text: f }))));
    for (const row of src.rows) {
      rows.append(
        el(
          "tr",
          {},
          fields.map((f) => {
            const value = labelled(f, row[f]);
            const text = value === null || value === undefined ? "—" : shorten(value, 400);
            return el("td", { title: shorten(value, 2000), text });
          })
        )
      );
    }
    if (!src.rows.length) {
      rows.append(el("tr", {}, el("td", { text: "This source has no sample rows here." })));
    }
    $("spec-yaml").textContent = src.spec_yaml || "";
  }

  function fillTemplatePicker() {
    const picker = clear($("template-picker"));
    picker.disabled = false;
    picker.append(el("option", { value: NEW, text: "+ New template" }));
    const templates = state.source.templates;
    for (const [origin, title] of [["user", "Your templates"], ["builtin", "Built-in"]]) {
      const group = el("optgroup", { label: title });
      templates.forEach((t, i) => {
        if (t.origin === origin) group.append(el("option", { value: String(i), text: t.id }));
      });
      if (group.children.length) picker.append(group);
    }
  }

  // A template's file as Save names it: the server gives files of the save folder by their
  // bare name, and may give others as absolute paths.
  function relativeToTemplates(file) {
    const dir = state.templatesDir;
    if (!file || !dir) return null;
    if (!/^([A-Za-z]:)?[\\/]/.test(file)) return file;
    const prefix = dir.endsWith("/") ? dir : dir + "/";
    return file.startsWith(prefix) ? file.slice(prefix.length) : null;
  }

  async function openTemplate(choice) {
    const src = state.source;
    const ticket = ++state.opening; // a quicker later choice wins over a slow earlier one
    state.templateChoice = choice;
    $("template-picker").value = String(choice);
    resetSaveMessage();
    let answer;
    if (choice === NEW) {
      answer = await api(`/api/new/${enc(src.name)}`);
    } else {
      const id = src.templates[choice].id;
      answer = await api(`/api/templates/${enc(src.name)}/${enc(id)}`);
    }
    if (ticket !== state.opening || src !== state.source) return;
    if (!answer.ok) {
      setStatus(answer.body.error, "bad");
      return;
    }
    const body = answer.body;
    const origin = $("template-origin");
    if (choice === NEW) {
      origin.textContent = "new, not saved yet";
      $("save-file").value = `${src.name}.yaml`;
    } else {
      const rel = relativeToTemplates(body.file);
      if (rel !== null) {
        if (body.etag) state.etags[rel] = body.etag;
        $("save-file").value = rel;
        origin.textContent = `from your folder: ${rel}`;
      } else {
        $("save-file").value = `${src.name}.yaml`;
        origin.textContent =
          body.origin === "builtin"
            ? "built-in: to save your own version, give it a new id"
            : body.file || "";
      }
    }
    state.lastGood = null; // a broken edit must not show another template's records
    setEditor(body.yaml);
    writeHash();
    runPreviewNow();
  }

  // ---------- preview ----------

  function abortPreview() {
    clearTimeout(state.timer);
    if (state.controller) state.controller.abort();
    state.controller = null;
  }

  function schedulePreview() {
    if (!state.source) return;
    clearTimeout(state.timer);
    state.timer = setTimeout(runPreview, PREVIEW_DELAY_MS);
  }

  function runPreviewNow() {
    clearTimeout(state.timer);
    runPreview();
  }

  async function runPreview() {
    if (!state.source) return;
    // Only the newest request may paint: older ones are cancelled, and an answer that still
    // arrives late is dropped by its sequence number.
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const seq = ++state.seq;
    const started = performance.now();
    setStatus("Rendering…", "busy");
    const payload = {
      source: state.source.name,
      yaml: editor.getValue(),
      n: Number($("rows-picker").value),
      seed: 0,
    };
    let answer;
    try {
      answer = await post("/api/preview", payload, controller.signal);
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      setStatus(`The studio server did not answer (${err.message}).`, "bad");
      return;
    }
    if (seq !== state.seq) return;
    state.controller = null;
    if (!answer.ok) {
      setStatus(answer.body.error, "bad");
      return;
    }
    const ms = Math.round(performance.now() - started);
    showPreview(answer.body);
    if (answer.body.error) setStatus("Not rendered: see the message under the editor", "bad");
    else setStatus(`Rendered in ${ms} ms`, "ok");
  }

  function showPreview(result) {
    const errorBox = $("yaml-error");
    markErrorLine(result.error);
    if (result.error) {
      errorBox.textContent = result.error;
      errorBox.hidden = false;
      document.querySelector(".preview-panel").classList.add("stale");
      $("preview-summary").textContent = state.lastGood
        ? "showing the last version that parsed"
        : "";
      if (!state.lastGood) {
        clear($("variant-tabs"));
        clear($("variant-body"));
        clear($("lint-list"));
        clear($("stats"));
        $("lint-count").textContent = "";
      }
      return;
    }
    errorBox.hidden = true;
    document.querySelector(".preview-panel").classList.remove("stale");
    state.lastGood = result;
    const id = result.template_id ? `template ${result.template_id}` : "";
    const shown = Number($("rows-picker").value);
    $("preview-summary").textContent = `${id} · ${shown} sample row${shown === 1 ? "" : "s"} in each form`;
    showVariants(result.variants || []);
    showLint(result.lint || []);
    showStats(result.stats);
  }

  const BASE_NAMES = [
    ["zero_shot_opt", "zero-shot, options"],
    ["zero_shot_noopt", "zero-shot, no options"],
    ["few_shot_opt", "few-shot, options"],
    ["few_shot_noopt", "few-shot, no options"],
    ["few_shot_cot", "few-shot CoT"],
    ["cot", "chain of thought"],
    ["inverted", "inverted"],
  ];

  // "zero_shot_opt:letters" reads "zero-shot, options · letters".
  function variantLabel(key) {
    const [name, style] = key.split(":");
    const known = BASE_NAMES.find(([base]) => base === name);
    const label = known ? known[1] : name.replace(/_/g, " ");
    return style ? `${label} · ${style}` : label;
  }

  function isReject(record) {
    return record.rule !== undefined && record.messages === undefined;
  }

  // One tab per form, and per option style where the server renders the options in several.
  function variantKey(v) {
    return v.style && !v.variant.includes(":") ? `${v.variant}:${v.style}` : v.variant;
  }

  function variantTitle(v) {
    return variantLabel(variantKey(v));
  }

  function showVariants(variants) {
    const tabs = clear($("variant-tabs"));
    const keys = variants.map(variantKey);
    if (!keys.includes(state.variant)) {
      const first = variants.find((v) => v.available) || variants[0];
      state.variant = first ? variantKey(first) : null;
    }
    for (const v of variants) {
      const key = variantKey(v);
      const rejects = v.records.filter(isReject).length;
      const good = v.records.length - rejects;
      const classes = ["tab"];
      if (!v.available) classes.push("unavailable");
      if (rejects) classes.push("has-rejects");
      if (key === state.variant) classes.push("selected");
      const tab = el(
        "button",
        {
          type: "button",
          role: "tab",
          class: classes.join(" "),
          "data-variant": key,
          "aria-selected": key === state.variant ? "true" : "false",
          title: v.available ? key : `${key}: ${v.reason || "not available"}`,
          onclick: () => {
            state.variant = key;
            showVariants(variants);
          },
        },
        variantTitle(v),
        v.available && (good || !rejects) ? el("span", { class: "badge", text: String(good) }) : null,
        rejects ? el("span", { class: "badge red", text: `${rejects} rejected` }) : null
      );
      tabs.append(tab);
    }
    const body = clear($("variant-body"));
    const chosen = variants.find((v) => variantKey(v) === state.variant);
    if (!chosen) {
      body.append(el("p", { class: "muted", text: "No variants to show." }));
      return;
    }
    if (!chosen.available) {
      body.append(
        el(
          "p",
          { class: "unavailable-note" },
          el("strong", { text: `${variantTitle(chosen)} is not available: ` }),
          chosen.reason || "the server gave no reason"
        )
      );
      return;
    }
    if (!chosen.records.length) {
      body.append(el("p", { class: "muted", text: "No records for this variant." }));
    }
    for (const record of chosen.records) body.append(recordCard(record));
  }

  function recordCard(record) {
    if (isReject(record)) {
      return el(
        "article",
        { class: "record reject" },
        el(
          "header",
          {},
          el("span", { class: "pill red", text: "rejected" }),
          el("code", { class: "rule", text: record.rule }),
          el("span", { class: "muted", text: `example ${record.example_id}` })
        ),
        el("p", { class: "reject-message", text: record.error })
      );
    }
    const messages = record.messages || [];
    const last = messages[messages.length - 1];
    const card = el(
      "article",
      { class: "record" },
      el(
        "header",
        {},
        el("span", { class: "muted", text: `example ${record.example_id}` }),
        el("code", { class: "variant-code", text: record.variant })
      ),
      messages.map((m) =>
        el(
          "div",
          { class: `message role-${m.role}` },
          el("div", { class: "role", text: m.role }),
          el("pre", { text: m.content })
        )
      )
    );
    const target = record.target;
    if (target !== undefined && target !== null && !(last && last.role === "assistant" && last.content === target)) {
      card.append(el("div", { class: "target" }, el("span", { class: "role", text: "target" }), el("pre", { text: String(target) })));
    }
    const choices = record.answer_choices;
    if (Array.isArray(choices) && choices.length) {
      card.append(
        el(
          "div",
          { class: "choices" },
          el("span", { class: "muted", text: "answer choices " }),
          choices.map((c) =>
            el("span", { class: "chip" + (c === target || (last && c === last.content) ? " gold" : ""), text: c })
          )
        )
      );
    }
    return card;
  }

  function showLint(findings) {
    const list = clear($("lint-list"));
    const errors = findings.filter((f) => f.severity === "error").length;
    const warnings = findings.length - errors;
    const count = $("lint-count");
    count.textContent = findings.length
      ? [errors ? `${errors} error${errors === 1 ? "" : "s"}` : "", warnings ? `${warnings} warning${warnings === 1 ? "" : "s"}` : ""].filter(Boolean).join(", ")
      : "clean";
    count.className = "count " + (errors ? "red" : warnings ? "amber" : "green");
    if (!findings.length) {
      list.append(el("li", { class: "lint-clean", text: "No findings on these sample rows." }));
      return;
    }
    for (const f of findings) {
      const item = el(
        "li",
        { class: `finding ${f.severity}`, "data-rule": f.rule },
        el(
          "div",
          { class: "finding-head" },
          el("span", { class: `pill ${f.severity === "error" ? "red" : "amber"}`, text: f.severity }),
          el("code", { class: "rule", text: f.rule }),
          f.example_id !== null && f.example_id !== undefined
            ? el("span", { class: "muted", text: `example ${f.example_id}` })
            : null
        ),
        el("p", { class: "finding-message", text: f.message })
      );
      if (f.row) {
        item.append(
          el(
            "dl",
            { class: "finding-row" },
            Object.entries(f.row).map(([k, v]) => [
              el("dt", { text: k }),
              el("dd", { text: v === null || v === undefined ? "—" : shorten(labelled(k, v), 240) }),
            ])
          )
        );
      }
      list.append(item);
    }
  }

  // ---------- statistics ----------

  function showStats(stats) {
    const box = clear($("stats"));
    if (!stats) return;
    const rejected = stats.rejects ? `, ${stats.rejects} rejected` : "";
    $("stats-summary").textContent = `over ${stats.rows} sample rows: ${stats.records} records${rejected}`;
    const distinct = el(
      "p",
      { class: "distinct" },
      el("strong", { text: String(stats.distinct_prompts) }),
      ` distinct prompt${stats.distinct_prompts === 1 ? "" : "s"} in ${stats.records} record${stats.records === 1 ? "" : "s"}`
    );
    if (stats.records > 1 && stats.distinct_prompts === 1) {
      distinct.classList.add("warn");
      distinct.append(" — every prompt is the same: the template ignores the row");
    }
    box.append(distinct);

    const kinds = stats.answers.length;
    const answers = el(
      "div",
      { class: "stat-block" },
      el("h3", {}, "Answers ", el("span", { class: "muted", text: kinds ? `(${kinds} distinct)` : "" }))
    );
    const total = stats.answers.reduce((sum, [, n]) => sum + n, 0);
    const top = stats.answers.length ? stats.answers[0][1] : 0;
    if (!stats.answers.length) answers.append(el("p", { class: "muted", text: "No answers yet." }));
    for (const [value, n] of stats.answers.slice(0, 12)) {
      const share = total ? Math.round((100 * n) / total) : 0;
      answers.append(
        el(
          "div",
          { class: "bar-row", title: `${n} of ${total}` },
          el("span", { class: "bar-label", text: shorten(value, 40) }),
          el("span", { class: "bar-track" }, el("span", { class: "bar", style: `width:${top ? (100 * n) / top : 0}%` })),
          el("span", { class: "bar-value", text: `${n} · ${share}%` })
        )
      );
    }
    if (stats.answers.length > 12) {
      answers.append(el("p", { class: "muted", text: `and ${stats.answers.length - 12} more` }));
    }
    box.append(answers);
    box.append(histogram("Prompt length (characters)", stats.prompt_lengths));
    box.append(histogram("Output length (characters)", stats.output_lengths));
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const c of children) node.append(c);
    return node;
  }

  function histogram(title, hist) {
    const block = el("div", { class: "stat-block" }, el("h3", { text: title }));
    const counts = (hist && hist.counts) || [];
    const edges = (hist && hist.edges) || [];
    if (!counts.length) {
      block.append(el("p", { class: "muted", text: "No records yet." }));
      return block;
    }
    const width = 320;
    const height = 90;
    const gap = 2;
    const barWidth = (width - gap * (counts.length - 1)) / counts.length;
    const top = Math.max(...counts, 1);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, class: "histogram", role: "img" });
    counts.forEach((n, i) => {
      const h = n ? Math.max(2, (height * n) / top) : 0;
      const low = edges[i];
      const high = edges[i + 1];
      const range = high !== undefined ? `${Math.round(low)}–${Math.round(high)}` : `${Math.round(low)}`;
      const rect = svg("rect", {
        x: i * (barWidth + gap),
        y: height - h,
        width: barWidth,
        height: h,
        rx: 1.5,
      });
      rect.append(svg("title", {}, document.createTextNode(`${range}: ${n}`)));
      chart.append(rect);
    });
    chart.append(svg("line", { x1: 0, y1: height + 0.5, x2: width, y2: height + 0.5, class: "axis" }));
    if (edges.length) {
      const first = svg("text", { x: 0, y: height + 13, class: "tick" });
      first.textContent = String(Math.round(edges[0]));
      const last = svg("text", { x: width, y: height + 13, class: "tick end" });
      last.textContent = String(Math.round(edges[edges.length - 1]));
      chart.append(first, last);
    }
    block.append(chart);
    return block;
  }

  // ---------- saving ----------

  function setupSave() {
    const label = document.querySelector("#save-form label");
    if (state.writable) {
      label.firstChild.textContent = `File in ${state.templatesDir || "your templates folder"}`;
      $("save-file").disabled = false;
      $("save-button").disabled = false;
    } else {
      $("save-file").disabled = true;
      $("save-button").disabled = true;
    }
    resetSaveMessage();
  }

  function resetSaveMessage() {
    if (state.writable) $("save-message").hidden = true;
    else {
      saveMessage(
        "Saving is off: start the studio with --templates DIR to choose the folder templates are written to.",
        "info"
      );
    }
  }

  function saveMessage(text, kind) {
    const box = $("save-message");
    box.textContent = text;
    box.className = `save-message ${kind}`;
    box.hidden = false;
  }

  async function save() {
    if (!state.source || !state.writable) return;
    const file = $("save-file").value.trim();
    if (!file) {
      saveMessage("Give a file name inside your templates folder, such as my_source.yaml.", "bad");
      return;
    }
    const yaml = editor.getValue();
    const button = $("save-button");
    button.disabled = true;
    saveMessage("Saving…", "info");
    try {
      const { ok, status, body } = await post("/api/save", {
        source: state.source.name,
        yaml,
        file,
        etag: Object.prototype.hasOwnProperty.call(state.etags, file) ? state.etags[file] : null,
      });
      if (!ok) {
        if (status === 409) {
          saveMessage("Not saved: " + body.error, "conflict");
          offerReread(file);
        } else {
          saveMessage("Not saved: " + body.error, "bad");
        }
        return;
      }
      state.etags[file] = body.etag;
      state.baseline = yaml;
      updateDirty();
      saveMessage(`Saved to ${body.path}`, "ok");
      await refreshTemplates();
    } catch (err) {
      saveMessage(`Not saved: the studio server did not answer (${err.message}).`, "bad");
    } finally {
      button.disabled = !state.writable;
    }
  }

  // After a conflict: read the file's current version (its etag), keeping the editor's text,
  // so that the next Save replaces only this template's block in what is on disk now.
  function offerReread(file) {
    const button = el("button", { type: "button", class: "secondary", id: "reread-button" }, "Read the file again");
    button.addEventListener("click", () => reread(file));
    $("save-message").append(" ", button);
  }

  async function reread(file) {
    const id = state.lastGood && state.lastGood.template_id;
    const source = state.source.name;
    const { ok, status, body } = id
      ? await api(`/api/templates/${enc(source)}/${enc(id)}`)
      : { ok: false, status: 404, body: {} };
    if (ok && relativeToTemplates(body.file) === file) {
      state.etags[file] = body.etag;
      saveMessage(
        `Read ${file} again. Save now puts your text in place of its template ${id}; the rest of the file stays as it is on disk.`,
        "info"
      );
    } else if (ok || status === 404) {
      delete state.etags[file];
      saveMessage(`Read ${file} again: it has no template ${id || "of this id"}; Save adds yours to it.`, "info");
    } else {
      saveMessage(`Could not read ${file}: ${body.error}`, "bad");
    }
  }

  // After a save the source's template list changes; the editor keeps what the user typed.
  async function refreshTemplates() {
    const name = state.source.name;
    const { ok, body } = await api(`/api/sources/${enc(name)}`);
    if (!ok || !state.source || state.source.name !== name) return;
    state.source.templates = body.templates;
    fillTemplatePicker();
    const id = state.lastGood && state.lastGood.template_id;
    const at = body.templates.findIndex((t) => t.id === id && t.origin === "user");
    state.templateChoice = at >= 0 ? at : state.templateChoice;
    $("template-picker").value = String(state.templateChoice);
    if (at >= 0) {
      $("template-origin").textContent = `from your folder: ${$("save-file").value.trim()}`;
      writeHash();
    }
    const listed = state.sources.find((s) => s.name === name);
    if (listed) {
      listed.templates = body.templates.length;
      const option = [...$("source-picker").options].find((o) => o.value === name);
      if (option) option.textContent = sourceOptionText(listed);
    }
  }

  // ---------- location hash: #source=NAME&template=ID ----------

  function writeHash() {
    if (!state.source) return;
    const params = new URLSearchParams({ source: state.source.name });
    const choice = state.templateChoice;
    params.set("template", choice === NEW ? "new" : state.source.templates[choice].id);
    history.replaceState(null, "", "#" + params.toString());
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const template = params.get("template");
    return { source: params.get("source"), template: template === "new" ? NEW : template };
  }

  // ---------- wiring ----------

  $("source-picker").addEventListener("change", (e) => openSource(e.target.value));
  $("template-picker").addEventListener("change", (e) => {
    const value = e.target.value;
    openTemplate(value === NEW ? NEW : Number(value));
  });
  $("rows-picker").addEventListener("change", runPreviewNow);
  $("save-form").addEventListener("submit", (e) => {
    e.preventDefault();
    save();
  });

  async function start() {
    try {
      await loadSources();
    } catch (err) {
      showFatal(`The studio server did not answer (${err.message}). Is it still running?`);
      return;
    }
    const wanted = readHash();
    if (wanted.source && state.sources.some((s) => s.name === wanted.source)) {
      await openSource(wanted.source, wanted.template);
    } else {
      setStatus("Choose a source to begin.");
    }
  }

  window.studio = { editor }; // for the browser tests and the console
  start();
})();
