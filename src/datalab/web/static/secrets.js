// Secrets: a key/value editor over the secrets API. Values stay masked until "show values".
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("secrets");
  if (!root) return;
  const text = Datalab.messages(root);
  const directory = root.dataset.directory;
  const editor = document.getElementById("editor");
  const rows = document.getElementById("editor-rows");
  const reveal = document.getElementById("reveal");
  const errorBox = document.getElementById("editor-error");
  const url = (kind, path) => `/api/secrets/${kind}/${path.split("/").map(encodeURIComponent).join("/")}`;
  let current = null;

  function addRow(key = "", value = "") {
    const tr = document.createElement("tr");
    const index = rows.children.length;
    const keyInput = Object.assign(document.createElement("input"), { value: key, name: "key", id: `secret-key-${index}` });
    keyInput.setAttribute("aria-label", `${text.key} ${index + 1}`);
    const valueInput = Object.assign(document.createElement("input"), {
      value, name: "value", type: reveal.checked ? "text" : "password", autocomplete: "off", id: `secret-value-${index}`,
    });
    valueInput.setAttribute("aria-label", `${text.value} ${index + 1}`);
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: text.remove, className: "link-button" });
    remove.addEventListener("click", () => tr.remove());
    [keyInput, valueInput, remove].forEach((element) => {
      const td = document.createElement("td");
      td.appendChild(element);
      tr.appendChild(td);
    });
    rows.appendChild(tr);
    return keyInput;
  }

  function open(path, data) {
    current = path;
    document.getElementById("editor-path").textContent = path;
    document.getElementById("use-in-launch").href = "/catalog?with_secret=" + encodeURIComponent(path);
    rows.replaceChildren();
    errorBox.textContent = "";
    document.getElementById("env-box").hidden = true;
    Object.entries(data).forEach(([k, v]) => addRow(k, String(v)));
    if (!rows.children.length) addRow();
    editor.hidden = false;
    rows.querySelector("input").focus();
  }

  root.querySelectorAll("[data-open-secret]").forEach((button) => {
    button.addEventListener("click", async () => {
      try {
        const secret = await Datalab.api("GET", url("values", button.dataset.openSecret));
        open(button.dataset.openSecret, secret.data || {});
      } catch (error) { Datalab.toast(error.message, true); }
    });
  });

  document.getElementById("new-secret")?.addEventListener("click", () => {
    const name = (window.prompt(text.name) || "").trim();
    if (name) open(directory + name, {});
  });
  document.getElementById("new-directory")?.addEventListener("click", () => {
    const name = (window.prompt(text.name) || "").trim().replace(/\/+$/, "");
    if (name) open(`${directory}${name}/`, {});  // a directory exists once a secret is saved in it
  });

  document.getElementById("add-key").addEventListener("click", () => addRow().focus());
  reveal.addEventListener("change", () => {
    rows.querySelectorAll("input[name=value]").forEach((input) => { input.type = reveal.checked ? "text" : "password"; });
  });

  document.getElementById("editor-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (current.endsWith("/")) {
      const name = (window.prompt(text.name) || "").trim();
      if (!name) return;
      current += name;
    }
    const data = {};
    rows.querySelectorAll("tr").forEach((tr) => {
      const key = tr.querySelector("input[name=key]").value.trim();
      if (key) data[key] = tr.querySelector("input[name=value]").value;
    });
    try {
      await Datalab.api("PUT", url("values", current), { data });
      const parent = current.slice(0, current.lastIndexOf("/") + 1);
      window.location.assign(`/secrets?path=${encodeURIComponent(parent)}`);
    } catch (error) {
      errorBox.textContent = error.message;
    }
  });

  document.getElementById("show-env").addEventListener("click", async () => {
    try {
      const response = await Datalab.api("GET", url("export", current), undefined, { raw: true });
      document.getElementById("env-text").value = await response.text();
      document.getElementById("env-box").hidden = false;
    } catch (error) { Datalab.toast(error.message, true); }
  });

  document.getElementById("delete-secret").addEventListener("click", async () => {
    if (!window.confirm(text.confirm_delete)) return;
    try {
      await Datalab.api("DELETE", url("values", current));
      window.location.reload();
    } catch (error) { Datalab.toast(error.message, true); }
  });
});
