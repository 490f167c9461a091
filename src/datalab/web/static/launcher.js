// The launcher: turns the generated form into overrides (only the fields the user changed),
// asks the API for a dry run as the form changes (command bar + inline validation), launches.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("launcher");
  if (!form) return;
  const text = Datalab.messages(form);
  const fields = Array.from(form.querySelectorAll("[data-field]"));
  const byPath = new Map(fields.map((f) => [f.dataset.path, f]));
  const control = (field) => field.querySelector("input:not([type=range]), select, textarea");

  // -- reading and writing fields -----------------------------------------------------------

  // -- arrays of objects: one group of inputs per item ---------------------------------------

  function readItemInput(input) {
    const kind = input.dataset.kind;
    if (kind === "json") return JSON.parse(input.value || "null");
    if (input.type === "checkbox") return input.checked;
    if (kind === "number" || kind === "integer") {
      return input.value.trim() === "" ? null : (Number.isNaN(Number(input.value)) ? input.value : Number(input.value));
    }
    return input.value;
  }

  function readItems(field) {
    return Array.from(field.querySelectorAll(".items > .item")).map((item) => {
      const value = {};
      item.querySelectorAll("[data-key]").forEach((input) => { value[input.dataset.key] = readItemInput(input); });
      return value;
    });
  }

  function addItem(field, value) {
    const item = field.querySelector("template").content.firstElementChild.cloneNode(true);
    item.querySelectorAll("[data-key]").forEach((input) => {
      const v = value ? value[input.dataset.key] : undefined;
      if (v === undefined) return;
      if (input.dataset.kind === "json") input.value = JSON.stringify(v);
      else if (input.type === "checkbox") input.checked = Boolean(v);
      else input.value = v === null ? "" : String(v);
    });
    field.querySelector(".items").append(item);
    return item;
  }

  form.addEventListener("click", (event) => {
    const field = event.target.closest("[data-widget=objects]");
    if (!field) return;
    if (event.target.closest(".add-item")) {
      addItem(field, null).querySelector("input:not([type=hidden]), select")?.focus();
    } else if (event.target.closest(".remove-item")) {
      event.target.closest(".item").remove();
      field.querySelector(".add-item").focus();
    } else {
      return;
    }
    schedulePreview();
  });

  function readField(field) {
    const input = control(field);
    const widget = field.dataset.widget;
    if (widget === "objects") return readItems(field);
    if (widget === "checkbox") return input.checked;
    const raw = input.value;
    const numeric = widget === "number" || widget === "integer" ||
      (widget === "slider" && ["number", "integer"].includes(field.dataset.type));
    // a number the browser cannot read stays text: the API then names the problem
    if (numeric) return raw.trim() === "" ? null : (Number.isNaN(Number(raw)) ? raw : Number(raw));
    if (widget === "list") return raw.split("\n").map((s) => s.trim()).filter(Boolean);
    if (widget === "json") {
      try {
        return JSON.parse(raw || "null");
      } catch (_) {
        throw new SyntaxError(text.invalid_json);
      }
    }
    return raw;
  }

  function writeField(field, value) {
    const input = control(field);
    const widget = field.dataset.widget;
    if (widget === "objects") {
      field.querySelector(".items").replaceChildren();
      (value || []).forEach((item) => addItem(field, item));
    } else if (widget === "checkbox") input.checked = Boolean(value);
    else if (widget === "password") input.value = "";
    else if (widget === "list") input.value = (value || []).join("\n");
    else if (widget === "json") input.value = JSON.stringify(value, null, 2);
    else input.value = value === null || value === undefined ? "" : String(value);
    if (widget === "slider") syncRange(field);
  }

  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function setPath(target, path, value) {
    // keys joined by ".", a dot inside a key escaped as "\." (forms.dotted)
    const parts = path.split(/(?<!\\)\./).map((part) => part.replace(/\\\./g, "."));
    let node = target;
    parts.slice(0, -1).forEach((part) => { node = node[part] = node[part] || {}; });
    node[parts[parts.length - 1]] = value;
  }

  // The overrides: changed fields only. Passwords count only when typed in.
  function collect() {
    const values = {};
    const flat = [];
    const problems = [];
    for (const field of fields) {
      if (control(field).disabled || control(field).readOnly) continue;
      let value;
      try {
        value = readField(field);
      } catch (error) {
        problems.push({ path: field.dataset.path, message: error.message });
        continue;
      }
      if (field.dataset.widget === "password" ? value === "" : same(value, JSON.parse(field.dataset.default))) continue;
      setPath(values, field.dataset.path, value);
      flat.push([field.dataset.path, value]);
    }
    return { values, flat, problems };
  }

  function request() {
    const { values, flat, problems } = collect();
    return {
      body: {
        catalog: form.dataset.catalog,
        chart: form.dataset.chart,
        version: form.elements.version.value,
        name: form.elements.name.value.trim() || null,
        friendly_name: form.elements.friendly_name.value.trim() || null,
        shared: form.elements.shared.checked,
        values,
      },
      flat,
      problems,
    };
  }

  // -- sliders and conditional fields ---------------------------------------------------------

  // Kubernetes quantities ("2", "1500m", "512Mi", "4Gi") in the slider's unit
  const FACTORS = { m: 1e-3, "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  function inUnit(raw, unit) {
    const match = /^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$/.exec(raw.trim());
    if (!match || !(match[2] in FACTORS) || !(unit in FACTORS)) return null;
    return (parseFloat(match[1]) * FACTORS[match[2]]) / FACTORS[unit];
  }

  function syncRange(field) {
    const range = field.querySelector("input[type=range]");
    if (!range) return;
    const value = inUnit(control(field).value, range.dataset.unit || "");
    if (value !== null) range.value = value;
  }

  // A request and its limit (same sliderRangeId in one section, extremities down and up) stay
  // in order, as Onyxia's range slider keeps them: moving one past the other takes it along.
  function partner(field) {
    const range = field.querySelector("input[type=range]");
    if (!range || !range.dataset.rangeId) return null;
    const section = field.dataset.path.split(".")[0];
    return fields.find((other) => {
      const otherRange = other.querySelector("input[type=range]");
      return other !== field && otherRange && otherRange.dataset.rangeId === range.dataset.rangeId &&
        otherRange.dataset.extremity !== range.dataset.extremity &&
        other.dataset.path.split(".")[0] === section;
    }) || null;
  }

  function keepInOrder(field) {
    const other = partner(field);
    if (!other || control(other).disabled || control(other).readOnly) return;
    const range = field.querySelector("input[type=range]");
    const unit = range.dataset.unit || "";
    const mine = inUnit(control(field).value, unit);
    const theirs = inUnit(control(other).value, unit);
    if (mine === null || theirs === null) return;
    const down = range.dataset.extremity === "down";
    if (down ? mine > theirs : mine < theirs) {
      control(other).value = control(field).value;
      syncRange(other);
      control(other).dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  fields.filter((f) => f.dataset.widget === "slider").forEach((field) => {
    const range = field.querySelector("input[type=range]");
    syncRange(field);
    control(field).addEventListener("input", () => { syncRange(field); keepInOrder(field); });
    range.addEventListener("input", () => {
      control(field).value = `${range.value}${range.dataset.unit || ""}`;
      control(field).dispatchEvent(new Event("input", { bubbles: true }));
    });
  });

  function applyConditions() {
    form.querySelectorAll("[data-hide-path]").forEach((element) => {
      const other = byPath.get(element.dataset.hidePath);
      if (!other) return;
      let value;
      try { value = readField(other); } catch (_) { return; }
      element.hidden = same(value, JSON.parse(element.dataset.hideValue));
    });
  }

  // -- problems next to the fields ------------------------------------------------------------

  const generalErrors = document.getElementById("general-errors");

  function showProblems(problems) {
    form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((f) => f.classList.remove("invalid"));
    form.querySelectorAll("[role=tab].has-error").forEach((t) => t.classList.remove("has-error"));
    const general = [];
    for (const problem of problems) {
      const path = (problem.path || "").replace(/\[\d+\].*$/, "");
      let field = byPath.get(path);
      // a problem inside an object shown as JSON: the nearest field above it
      for (let p = path; !field && p.includes("."); ) { p = p.slice(0, p.lastIndexOf(".")); field = byPath.get(p); }
      if (path === "name" && !field) {
        document.getElementById("service-name-error").textContent = problem.message;
        continue;
      }
      if (!field) {
        general.push(problem.path ? `${problem.path}: ${problem.message}` : problem.message);
        continue;
      }
      field.classList.add("invalid");
      const box = field.querySelector(".field-error");
      box.textContent = box.textContent ? `${box.textContent} ${problem.message}` : problem.message;
      const panel = field.closest("[role=tabpanel]");
      if (panel) document.getElementById(panel.getAttribute("aria-labelledby"))?.classList.add("has-error");
    }
    generalErrors.textContent = general.join("\n");
    generalErrors.hidden = general.length === 0;
    // the command bar shows the last valid launch: dim it while the form is not valid
    form.querySelector(".command-bar").classList.toggle("stale", problems.length > 0);
  }

  function problemsOf(error) {
    if (Array.isArray(error.details) && error.details.length && error.details[0].message) return error.details;
    if (Array.isArray(error.details) && error.details.length && error.details[0].problem) {
      return error.details.map((d) => ({ path: d.field === "name" ? "name" : "", message: `${d.field}: ${d.problem}` }));
    }
    return [{ path: "", message: error.message }];
  }

  // -- the command bar: a dry run as the form changes ----------------------------------------

  let pending = null;
  let sequence = 0;
  async function preview() {
    const { body, problems } = request();
    const mine = ++sequence;
    if (problems.length) { showProblems(problems); return; }
    const query = new URLSearchParams({ catalog: body.catalog, chart: body.chart, version: body.version, values: JSON.stringify(body.values) });
    if (body.name) query.set("name", body.name);
    try {
      const result = await Datalab.api("GET", `/api/launch-preview?${query}`);
      if (mine !== sequence) return;
      document.getElementById("cmd-datalab").textContent = result.commands.datalab;
      document.getElementById("cmd-helm").textContent = result.commands.helm;
      document.getElementById("cmd-values").textContent = result.commands.values_yaml;
      showProblems([]);
    } catch (error) {
      if (mine === sequence) showProblems(problemsOf(error));
    }
  }
  function schedulePreview() {
    applyConditions();
    clearTimeout(pending);
    pending = setTimeout(preview, 250);
  }
  form.addEventListener("input", schedulePreview);
  form.addEventListener("change", schedulePreview);

  // -- actions ---------------------------------------------------------------------------------

  const launchButton = document.getElementById("launch-button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { body, problems } = request();
    if (problems.length) { showProblems(problems); return; }
    launchButton.disabled = true;
    const label = launchButton.textContent;
    launchButton.textContent = text.launching;
    try {
      const service = await Datalab.api("POST", "/api/services", body);
      window.location.assign(`/services#svc-${encodeURIComponent(service.id)}`);
    } catch (error) {
      showProblems(problemsOf(error));
      Datalab.toast(error.message, true);
      launchButton.disabled = false;
      launchButton.textContent = label;
    }
  });

  document.getElementById("restore-defaults").addEventListener("click", () => {
    fields.forEach((field) => writeField(field, JSON.parse(field.dataset.default)));
    schedulePreview();
  });

  document.getElementById("version").addEventListener("change", (event) => {
    const url = new URL(window.location.href);
    url.searchParams.set("version", event.target.value);
    window.location.assign(url.toString());
  });

  // The auto-launch link: this page with every changed field (secrets left out) as a parameter.
  document.getElementById("copy-url").addEventListener("click", async () => {
    const { flat } = request();
    const url = new URL(window.location.pathname, window.location.origin);
    url.searchParams.set("version", form.elements.version.value);
    if (form.elements.name.value.trim()) url.searchParams.set("name", form.elements.name.value.trim());
    if (form.elements.friendly_name.value.trim()) url.searchParams.set("friendly_name", form.elements.friendly_name.value.trim());
    if (form.elements.shared.checked) url.searchParams.set("shared", "true");
    for (const [path, value] of flat) {
      if (byPath.get(path).dataset.widget === "password") continue;
      url.searchParams.set(path, typeof value === "string" ? value : JSON.stringify(value));
    }
    url.searchParams.set("autolaunch", "true");
    const box = document.getElementById("autolaunch-url");
    box.value = url.toString();
    document.getElementById("autolaunch-url-box").hidden = false;
    await Datalab.copy(box.value);
    Datalab.toast(text.copied);
  });

  document.getElementById("save-config").addEventListener("click", async () => {
    const { body, problems } = request();
    if (problems.length) { showProblems(problems); return; }
    const name = window.prompt(text.config_name, form.elements.friendly_name.value);
    if (!name) return;
    try {
      await Datalab.api("POST", "/api/saved-configs", {
        name, catalog: body.catalog, chart: body.chart, version: body.version, values: body.values,
      });
      Datalab.toast(text.saved);
    } catch (error) {
      showProblems(problemsOf(error));
      Datalab.toast(error.message, true);
    }
  });

  // -- tabs (WAI-ARIA pattern: arrows move between tabs) ---------------------------------------

  const tabs = Array.from(form.querySelectorAll("[role=tab]"));
  function selectTab(tab, focus) {
    tabs.forEach((t) => {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !selected;
    });
    if (focus) tab.focus();
  }
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: tabs.length - 1 - index };
      if (!(event.key in moves)) return;
      event.preventDefault();
      selectTab(tabs[(index + moves[event.key] + tabs.length) % tabs.length], true);
    });
  });
  if (tabs.length) selectTab(tabs[0], false);

  applyConditions();
  const initial = JSON.parse(form.dataset.initialProblems || "[]");
  if (initial.length) showProblems(initial);
  else preview();
  if (form.dataset.autolaunch === "true") launchButton.focus();
});
