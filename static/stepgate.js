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

document.addEventListener("DOMContentLoaded", () => {
  // Recovery codes: save as a text file, or print.
  for (const button of document.querySelectorAll("[data-download]")) {
    button.addEventListener("click", () => {
      const source = document.getElementById(button.dataset.download);
      if (!source) return;
      const lines = [...source.querySelectorAll("code")].map((code) => code.textContent.trim());
      const file = new Blob([lines.join("\n") + "\n"], { type: "text/plain" });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(file);
      link.download = button.dataset.filename || "recovery-codes.txt";
      link.click();
      URL.revokeObjectURL(link.href);
    });
  }
  for (const button of document.querySelectorAll("[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
});
