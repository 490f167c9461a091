// Administration: users and projects through the JSON API (admin endpoints).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const holder = document.querySelector("[data-messages]");
  if (!holder) return;
  const text = Datalab.messages(holder);
  const result = document.getElementById("admin-result");
  const format = (template, values) => template.replace(/\{(\w+)\}/g, (_, k) => values[k]);
  const reloadWith = (message) => {
    if (message) sessionStorage.setItem("admin-result", message);
    window.location.reload();
  };
  const kept = sessionStorage.getItem("admin-result");
  if (kept) {
    sessionStorage.removeItem("admin-result");
    result.textContent = kept;
    result.hidden = false;
  }

  document.getElementById("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    try {
      const user = await Datalab.api("POST", "/api/users", {
        name: f.name.value.trim(), email: f.email.value.trim() || null, is_admin: f.is_admin.checked,
      });
      reloadWith(format(text.password_is, { user: user.name, password: user.password }));
    } catch (error) {
      document.getElementById("user-error").textContent = error.message;
    }
  });

  document.querySelectorAll("[data-user-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      const name = button.closest("[data-user]").dataset.user;
      const action = button.dataset.userAction;
      const confirmations = { disable: text.confirm_disable, "reset-password": text.confirm_reset };
      if (confirmations[action] && !window.confirm(confirmations[action])) return;
      try {
        const body = action === "reset-password" ? {} : undefined;
        const answer = await Datalab.api("POST", `/api/users/${encodeURIComponent(name)}/${action}`, body);
        reloadWith(action === "reset-password" ? format(text.password_is, { user: name, password: answer.password }) : null);
      } catch (error) {
        Datalab.toast(error.message, true);
      }
    });
  });

  document.getElementById("project-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    try {
      await Datalab.api("POST", "/api/projects", { name: f.name.value.trim(), display_name: f.display_name.value.trim() });
      reloadWith(null);
    } catch (error) {
      document.getElementById("project-error").textContent = error.message;
    }
  });

  document.querySelectorAll(".member-form").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const project = form.closest("[data-project]").dataset.project;
      try {
        await Datalab.api("POST", `/api/projects/${encodeURIComponent(project)}/members`, {
          user: form.elements.user.value, role: form.elements.role.value,
        });
        reloadWith(null);
      } catch (error) {
        Datalab.toast(error.message, true);
      }
    });
  });

  document.querySelectorAll("[data-remove-member]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!window.confirm(text.confirm_remove)) return;
      const project = button.closest("[data-project]").dataset.project;
      try {
        await Datalab.api("DELETE", `/api/projects/${encodeURIComponent(project)}/members/${encodeURIComponent(button.dataset.removeMember)}`);
        reloadWith(null);
      } catch (error) {
        Datalab.toast(error.message, true);
      }
    });
  });
});
