// Voltwatch sign-in: JSON to /api/auth/login (the hub sets an HttpOnly session cookie), then
// the page asked for (home by default). Each page carries the session's CSRF token itself.
"use strict";

(function () {
  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("login-form");
    const error = document.getElementById("login-error");
    const next = () => {
      const target = new URLSearchParams(location.search).get("next") || "/";
      return target.startsWith("/") && !target.startsWith("//") ? target : "/";
    };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      const body = {
        name: document.getElementById("login-name").value.trim(),
        password: document.getElementById("login-password").value,
      };
      let response;
      try {
        response = await fetch("/api/auth/login", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          credentials: "same-origin",
        });
      } catch (e) {
        error.textContent = form.dataset.error;
        error.hidden = false;
        return;
      }
      if (response.ok) {
        localStorage.removeItem("voltwatch-token");  // the session replaces any old token
        document.cookie = "voltwatch_token=; path=/; max-age=0; SameSite=Strict";
        location.href = next();
        return;
      }
      error.textContent = response.status === 429 ? form.dataset.locked
        : response.status === 401 ? form.dataset.failed : form.dataset.error;
      error.hidden = false;
    });
    document.getElementById("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = document.getElementById("token-input").value.trim();
      localStorage.setItem("voltwatch-token", token);
      // Pages learn who is asking from this cookie; the API from the Authorization header.
      document.cookie = "voltwatch_token=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
      location.href = next();
    });
  });
})();
