// Small comforts for the portal pages. Everything works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // One submission per form: a second click would reuse a spent TOTP code.
  for (const form of document.querySelectorAll("form")) {
    form.addEventListener("submit", () => {
      for (const button of form.querySelectorAll("button[type=submit]")) {
        button.disabled = true;
      }
    });
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (source && navigator.clipboard) {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      }
    });
  }
});
