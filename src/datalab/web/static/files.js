// The S3 explorer: uploads (drag and drop, progress, cancel), folders, deletion, share links,
// public folders, previews and code snippets, through the storage API.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("explorer");
  if (!root) return;
  const text = Datalab.messages(root);
  const bucket = root.dataset.bucket;
  const prefix = root.dataset.prefix;
  const enc = (key) => key.split("/").map(encodeURIComponent).join("/");
  const objectUrl = (key) => `/api/storage/buckets/${encodeURIComponent(bucket)}/objects/${enc(key)}`;
  const fail = (error) => Datalab.toast(error.message, true);

  // -- uploads: XMLHttpRequest, for progress events and abort ---------------------------------

  const uploads = document.getElementById("uploads");
  let pending = 0;
  function upload(file) {
    const item = document.createElement("li");
    item.className = "upload-item";
    const name = document.createElement("span");
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = file.size || 1;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = root.dataset.cancel || "✕";
    item.append(name, bar, cancel);
    uploads.appendChild(item);

    const xhr = new XMLHttpRequest();
    xhr.open("PUT", objectUrl(prefix + file.name));
    xhr.setRequestHeader("X-CSRF-Token", document.querySelector('meta[name="csrf-token"]').content);
    const project = document.querySelector('meta[name="datalab-project"]');
    if (project) xhr.setRequestHeader("X-Datalab-Project", project.content);
    if (file.type) xhr.setRequestHeader("Content-Type", file.type);
    xhr.upload.addEventListener("progress", (event) => { bar.value = event.loaded; });
    cancel.addEventListener("click", () => xhr.abort());
    pending += 1;
    const done = (message, isError) => {
      cancel.remove();
      const status = document.createElement("span");
      status.textContent = message;
      if (isError) status.className = "error";
      item.appendChild(status);
      pending -= 1;
      if (pending === 0 && !isError) window.location.reload();
    };
    xhr.addEventListener("load", () => {
      if (xhr.status < 300) { bar.value = bar.max; done(text.uploaded, false); return; }
      let message = `HTTP ${xhr.status}`;
      try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* keep */ }
      done(message, true);
    });
    xhr.addEventListener("abort", () => done(text.cancelled, true));
    xhr.addEventListener("error", () => done(`HTTP ${xhr.status || "error"}`, true));
    xhr.send(file);
  }

  document.getElementById("upload-input").addEventListener("change", (event) => {
    Array.from(event.target.files).forEach(upload);
  });
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    Array.from(event.dataTransfer.files).forEach(upload);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") document.getElementById("upload-input").click();
  });

  // -- folders, public toggle ------------------------------------------------------------------

  document.getElementById("new-folder").addEventListener("click", async () => {
    const name = (window.prompt(text.folder_name) || "").trim().replace(/\/+$/, "");
    if (!name) return;
    try {
      await Datalab.api("PUT", objectUrl(`${prefix}${name}/`));
      window.location.assign(`/files?bucket=${encodeURIComponent(bucket)}&prefix=${encodeURIComponent(`${prefix}${name}/`)}`);
    } catch (error) { fail(error); }
  });

  const publicToggle = document.getElementById("public-toggle");
  publicToggle.addEventListener("change", async () => {
    try {
      await Datalab.api("PUT", `/api/storage/buckets/${encodeURIComponent(bucket)}/public`, {
        prefix, public: publicToggle.checked,
      });
      window.location.reload();
    } catch (error) {
      publicToggle.checked = !publicToggle.checked;
      fail(error);
    }
  });

  // -- per-object actions ----------------------------------------------------------------------

  const show = (id, key) => {
    ["share-box", "preview-box", "code-box"].forEach((box) => { document.getElementById(box).hidden = box !== id; });
    document.getElementById(id.replace("-box", "-key")).textContent = key;
    document.getElementById(id).scrollIntoView({ block: "nearest" });
  };
  let shareKey = null;

  async function act(row, action) {
    const key = row.dataset.key;
    try {
      if (action === "delete") {
        const folder = row.hasAttribute("data-folder");
        if (!window.confirm(folder ? text.confirm_delete_folder : text.confirm_delete)) return;
        await Datalab.api("DELETE", objectUrl(key) + (folder ? "?recursive=true" : ""));
        row.remove();
      } else if (action === "share") {
        shareKey = key;
        document.getElementById("share-url").value = "";
        show("share-box", key);
      } else if (action === "preview") {
        const answer = await Datalab.api("GET", `/api/storage/buckets/${encodeURIComponent(bucket)}/preview/${enc(key)}?rows=50`);
        renderPreview(answer);
        show("preview-box", key);
      } else if (action === "code") {
        const answer = await Datalab.api("GET", `/api/storage/snippets?bucket=${encodeURIComponent(bucket)}&key=${encodeURIComponent(key)}`);
        renderSnippets(answer.snippets);
        show("code-box", key);
      }
    } catch (error) { fail(error); }
  }

  document.getElementById("share-create").addEventListener("click", async () => {
    try {
      const answer = await Datalab.api("POST", `/api/storage/buckets/${encodeURIComponent(bucket)}/share`, {
        key: shareKey, expires_s: Number(document.getElementById("share-expiry").value),
      });
      const box = document.getElementById("share-url");
      box.value = answer.url;
      box.focus();
      box.select();
    } catch (error) { fail(error); }
  });

  function cell(tag, value) {
    const element = document.createElement(tag);
    if (tag === "th") element.scope = "col";
    element.textContent = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
    return element;
  }

  function renderPreview(answer) {
    const table = document.getElementById("preview-table");
    const columns = (answer.schema || []).map((c) => c.name);
    document.getElementById("preview-schema").textContent = (answer.schema || []).map((c) => `${c.name}: ${c.type}`).join(" · ");
    const headRow = document.createElement("tr");
    columns.forEach((name) => headRow.appendChild(cell("th", name)));
    table.tHead.replaceChildren(headRow);
    const rows = (answer.rows || []).map((row) => {
      const tr = document.createElement("tr");
      columns.forEach((name) => tr.appendChild(cell("td", Array.isArray(row) ? row[columns.indexOf(name)] : row[name])));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("td", text.no_rows);
      td.colSpan = Math.max(1, columns.length);
      tr.appendChild(td);
      rows.push(tr);
    }
    table.tBodies[0].replaceChildren(...rows);
  }

  function renderSnippets(snippets) {
    const holder = document.getElementById("code-snippets");
    holder.replaceChildren();
    Object.entries(snippets || {}).forEach(([name, code]) => {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = name;
      const pre = document.createElement("pre");
      pre.textContent = code;
      details.append(summary, pre);
      holder.appendChild(details);
    });
  }

  root.querySelectorAll("tr[data-key]").forEach((row) => {
    row.querySelectorAll("[data-file-action]").forEach((button) => {
      button.addEventListener("click", () => act(row, button.dataset.fileAction));
    });
  });
});
