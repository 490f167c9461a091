// Shared by every page: calls to the JSON API with the session's CSRF token and project,
// notifications, clipboard, auto-submitting selects, card search, icon fallbacks.
"use strict";

const Datalab = (() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";

  class ApiError extends Error {
    constructor(status, message, details) {
      super(message);
      this.status = status;
      this.details = details;
    }
  }

  // Calls the REST API as the signed-in user; throws ApiError with the platform's message.
  async function api(method, path, body, options = {}) {
    // the API answers errors in the page's language
    const headers = {
      "X-CSRF-Token": meta("csrf-token"), Accept: "application/json",
      "Accept-Language": document.documentElement.lang || "en",
    };
    const project = meta("datalab-project");
    if (project) headers["X-Datalab-Project"] = project;
    const init = { method, headers, credentials: "same-origin", signal: options.signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (options.raw) {
      if (!response.ok) throw await toError(response);
      return response;
    }
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw errorFrom(response.status, data);
    return data;
  }

  async function toError(response) {
    const type = response.headers.get("content-type") || "";
    return errorFrom(response.status, type.includes("json") ? await response.json() : null);
  }

  function errorFrom(status, data) {
    const error = data && data.error ? data.error : {};
    return new ApiError(status, error.message || `HTTP ${status}`, error.details);
  }

  let toastTimer = null;
  function toast(message, isError = false) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.classList.toggle("error", isError);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 3000);
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // older browsers and non-secure contexts: copy through a temporary text area
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }

  function messages(element) {
    const holder = element.closest("[data-messages]");
    return holder ? JSON.parse(holder.dataset.messages) : {};
  }

  function iconFallback(img) {
    const span = document.createElement("span");
    span.className = `chart-icon initial tint-${img.dataset.tint || 0}`;
    span.setAttribute("aria-hidden", "true");
    span.textContent = img.dataset.fallback || "?";
    img.replaceWith(span);
  }

  // With the "system" theme, services get user.darkMode from the colour scheme the browser
  // reports: tell the account when it differs from what the platform knows (rarely).
  function reportColourScheme() {
    const root = document.documentElement;
    if (root.dataset.systemDark === undefined || !window.matchMedia) return;
    const query = window.matchMedia("(prefers-color-scheme: dark)");
    const report = async () => {
      const dark = query.matches ? "true" : "false";
      if (root.dataset.systemDark === dark) return;
      root.dataset.systemDark = dark;
      try {
        await api("PATCH", "/api/me", { system_dark: dark === "true" });
      } catch (_) { /* the next page tries again */ }
    };
    report();
    query.addEventListener("change", report);
  }

  document.documentElement.classList.add("js");
  document.addEventListener("DOMContentLoaded", () => {
    reportColourScheme();
    // copy buttons that fragments (re)insert: a service's URL on its card and the home page
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-copy-text]");
      if (!button) return;
      await copy(new URL(button.dataset.copyText, window.location.href).href);
      toast(button.dataset.copied || messages(button).copied || "✓");
    });
    document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
      select.addEventListener("change", () => select.form.submit());
    });
    document.querySelectorAll("[data-copy-from]").forEach((button) => {
      button.addEventListener("click", async () => {
        const source = document.querySelector(button.dataset.copyFrom);
        await copy(source.value !== undefined ? source.value : source.textContent);
        toast(messages(button).copied || button.dataset.copied || "✓");
      });
    });
    document.querySelectorAll("img[data-fallback]").forEach((img) => {
      if (img.complete && img.naturalWidth === 0) iconFallback(img);
      else img.addEventListener("error", () => iconFallback(img));
    });
    document.querySelectorAll("[data-delete-config]").forEach((button) => {
      button.addEventListener("click", async () => {
        if (!window.confirm(messages(button).confirm_delete)) return;
        try {
          await api("DELETE", `/api/saved-configs/${button.dataset.deleteConfig}`);
          button.closest("li").remove();
        } catch (error) {
          toast(error.message, true);
        }
      });
    });
    const search = document.querySelector("[data-filter-cards]");
    if (search) {
      const cards = document.querySelectorAll(`${search.dataset.filterCards} > [data-search]`);
      const none = document.getElementById("no-card-match");
      search.addEventListener("input", () => {
        const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
        let shown = 0;
        cards.forEach((card) => {
          const match = words.every((w) => card.dataset.search.includes(w));
          card.hidden = !match;
          if (match) shown += 1;
        });
        if (none) none.hidden = shown > 0;
      });
    }
  });

  return { api, toast, copy, messages, ApiError };
})();
