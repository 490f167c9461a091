// Account: profile, password and API tokens through the JSON API.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const holder = document.querySelector("[data-messages]");
  if (!holder) return;
  const text = Datalab.messages(holder);
  const showError = (id, error) => { document.getElementById(id).textContent = error ? error.message : ""; };

  document.getElementById("profile-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const languageChanged = f.lang.value !== document.documentElement.lang;
    try {
      const body = {
        email: f.email.value, git_name: f.git_name.value, git_email: f.git_email.value, lang: f.lang.value,
      };
      // write-only: sent when typed (or removed), never read back
      if (f.git_token.value) body.git_token = f.git_token.value;
      else if (f.git_token_remove && f.git_token_remove.checked) body.git_token = "";
      await Datalab.api("PATCH", "/api/me", body);
      f.git_token.value = "";
      showError("profile-error", null);
      if (languageChanged) window.location.reload();
      else Datalab.toast(text.saved);
    } catch (error) {
      showError("profile-error", error);
    }
  });

  // the theme applies at once, and is saved to the account (services get user.darkMode)
  document.querySelectorAll("#theme-form input[name=theme]").forEach((radio) => {
    radio.addEventListener("change", async () => {
      if (!radio.checked) return;
      const before = document.documentElement.dataset.theme;
      document.documentElement.dataset.theme = radio.value;
      try {
        await Datalab.api("PATCH", "/api/me", { theme: radio.value });
        showError("theme-error", null);
        Datalab.toast(text.saved);
      } catch (error) {
        document.documentElement.dataset.theme = before;
        showError("theme-error", error);
      }
    });
  });

  document.getElementById("password-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    try {
      await Datalab.api("POST", "/api/me/password", { current: f.current.value, new: f.new.value });
      window.location.assign("/login");
    } catch (error) {
      showError("password-error", error);
    }
  });

  document.getElementById("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const body = { name: f.name.value };
    if (f.ttl_days.value) body.ttl_days = Number(f.ttl_days.value);
    try {
      const token = await Datalab.api("POST", "/api/me/tokens", body);
      showError("token-error", null);
      document.getElementById("new-token-value").value = token.token;
      document.getElementById("new-token").hidden = false;
      document.getElementById("new-token-value").focus();
    } catch (error) {
      showError("token-error", error);
    }
  });

  document.getElementById("show-s3")?.addEventListener("click", async () => {
    try {
      const answer = await Datalab.api("GET", "/api/storage/credentials");
      const values = { ...answer, ...answer.credential_process };
      document.querySelectorAll("[data-s3]").forEach((cell) => { cell.textContent = values[cell.dataset.s3] || ""; });
      document.getElementById("s3-credentials").hidden = false;
      showError("s3-error", null);
    } catch (error) {
      showError("s3-error", error);
    }
  });

  document.getElementById("show-vault")?.addEventListener("click", async () => {
    try {
      const answer = await Datalab.api("POST", "/api/secrets/token");
      document.getElementById("vault-exports").value = answer.exports;
      document.getElementById("vault-token").hidden = false;
      showError("vault-error", null);
    } catch (error) {
      showError("vault-error", error);
    }
  });

  document.querySelectorAll("[data-revoke]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!window.confirm(text.confirm_revoke)) return;
      try {
        await Datalab.api("DELETE", `/api/me/tokens/${button.dataset.revoke}`);
        window.location.reload();
      } catch (error) {
        Datalab.toast(error.message, true);
      }
    });
  });
});
