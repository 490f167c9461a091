// My services: actions through the JSON API, then a refresh of the card's status fragment.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const list = document.querySelector(".service-cards");
  if (!list) return;
  const text = Datalab.messages(list);
  const base = (id) => `/api/services/${encodeURIComponent(id)}`;

  function refresh(card) {
    const status = card.querySelector(".service-status");
    if (status && window.htmx) htmx.trigger(status, "refresh");
  }

  async function run(card, action) {
    const id = card.dataset.service;
    try {
      if (action === "password") {
        const service = await Datalab.api("GET", base(id));
        if (!service.password) { Datalab.toast(text.no_password); return; }
        await Datalab.copy(service.password);
        Datalab.toast(text.copied);
        return;
      }
      if (action === "delete") {
        if (!window.confirm(text.confirm_delete)) return;
        await Datalab.api("DELETE", base(id));
        stopFollowing(card);
        card.remove();
        return;
      }
      await Datalab.api("POST", `${base(id)}/${action}`);
      refresh(card);
    } catch (error) {
      Datalab.toast(error.message, true);
    }
  }

  // -- logs: the last lines, or a followed stream read chunk by chunk -------------------------

  const streams = new WeakMap();
  function stopFollowing(card) {
    const controller = streams.get(card);
    if (controller) controller.abort();
    streams.delete(card);
  }

  async function loadLogs(card, follow) {
    stopFollowing(card);
    const pre = card.querySelector(".logs");
    const controller = new AbortController();
    streams.set(card, controller);
    const url = `${base(card.dataset.service)}/logs?tail=500${follow ? "&follow=true" : ""}`;
    pre.textContent = "";
    try {
      const response = await Datalab.api("GET", url, undefined, { raw: true, signal: controller.signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += decoder.decode(value, { stream: true });
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
    } catch (error) {
      if (error.name !== "AbortError") Datalab.toast(error.message, true);
    }
  }

  list.querySelectorAll(".service-card").forEach((card) => {
    // the action buttons live in the polled status fragment: one delegated listener
    card.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button && card.contains(button) && ["password", "suspend", "resume", "delete"].includes(button.dataset.action)) {
        run(card, button.dataset.action);
      }
    });
    const logs = card.querySelector("[data-panel=logs]");
    const follow = card.querySelector("[data-action=follow]");
    logs.addEventListener("toggle", () => {
      if (logs.open) loadLogs(card, follow.checked);
      else stopFollowing(card);
    });
    follow.addEventListener("change", () => loadLogs(card, follow.checked));
    card.querySelector("[data-action=reload-logs]").addEventListener("click", () => loadLogs(card, follow.checked));
    card.querySelector("form[data-action=rename]")?.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = event.target.elements.name.value.trim();
      try {
        const service = await Datalab.api("PATCH", base(card.dataset.service), { name });
        card.querySelector(".service-name").textContent = service.name;
        Datalab.toast(text.saved);
      } catch (error) {
        Datalab.toast(error.message, true);
      }
    });
    const share = card.querySelector("[data-action=share]");
    share?.addEventListener("change", async () => {
      try {
        await Datalab.api("PATCH", base(card.dataset.service), { shared: share.checked });
        refresh(card);
      } catch (error) {
        share.checked = !share.checked;
        Datalab.toast(error.message, true);
      }
    });
  });
});
