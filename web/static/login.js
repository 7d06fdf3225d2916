// Voltwatch sign-in: JSON to /api/auth/login (the hub sets an HttpOnly session cookie), then
// the live page. The CSRF token is fetched again by the live page from /api/auth/me.
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
        location.href = next();
        return;
      }
      error.textContent = response.status === 429 ? form.dataset.locked
        : response.status === 401 ? form.dataset.failed : form.dataset.error;
      error.hidden = false;
    });
    document.getElementById("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      localStorage.setItem("voltwatch-token", document.getElementById("token-input").value.trim());
      location.href = next();
    });
  });
})();
