// WebAuthn ceremonies for the portal pages: registration, second-factor
// authentication and passwordless sign-in. A container marked
// data-webauthn="register|authenticate|passwordless" names its start and
// finish endpoints and carries the CSRF token; its data-webauthn-go
// buttons run the ceremony. The server checks everything; this file only
// converts between JSON (base64url) and the browser's ArrayBuffers.
"use strict";

(() => {
  const toBytes = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  };

  const toText = (buffer) => {
    if (!buffer) return undefined;
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const creationOptions = (options) => {
    const publicKey = { ...options.publicKey };
    publicKey.challenge = toBytes(publicKey.challenge);
    publicKey.user = { ...publicKey.user, id: toBytes(publicKey.user.id) };
    publicKey.excludeCredentials = (publicKey.excludeCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) }));
    return { publicKey };
  };

  const requestOptions = (options) => {
    const publicKey = { ...options.publicKey };
    publicKey.challenge = toBytes(publicKey.challenge);
    publicKey.allowCredentials = (publicKey.allowCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) }));
    return { publicKey };
  };

  const registration = (credential) => ({
    id: credential.id,
    rawId: toText(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: toText(credential.response.attestationObject),
      clientDataJSON: toText(credential.response.clientDataJSON),
      transports: credential.response.getTransports ? credential.response.getTransports() : undefined,
    },
    extensions: credential.getClientExtensionResults(),
  });

  const assertion = (credential) => ({
    id: credential.id,
    rawId: toText(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: toText(credential.response.authenticatorData),
      clientDataJSON: toText(credential.response.clientDataJSON),
      signature: toText(credential.response.signature),
      userHandle: toText(credential.response.userHandle),
    },
    extensions: credential.getClientExtensionResults(),
  });

  const post = async (url, csrf, body) => {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let answer = {};
    try {
      answer = await response.json();
    } catch (_) {
      answer = {};
    }
    if (!response.ok) throw new Error(answer.error || "The request failed. Reload the page and try again.");
    return answer;
  };

  const explain = (error) => {
    if (error && error.name === "NotAllowedError") return "The request was cancelled or timed out. Try again when you are ready.";
    if (error && error.name === "InvalidStateError") return "This authenticator is already registered.";
    if (error && error.name === "SecurityError") return "This site cannot use security keys at this address.";
    return (error && error.message) || "Something went wrong. Try again.";
  };

  const run = async (box, button) => {
    const { webauthn: mode, start, finish, csrf, rd } = box.dataset;
    const remember = box.querySelector("input[name=remember]");
    const name = box.querySelector("[data-webauthn-name]") || document.querySelector("[data-webauthn-name]");
    const startBody = mode === "register" ? { kind: button.dataset.kind, name: name ? name.value : "" } : {};
    const options = await post(start, csrf, startBody);
    const credential = mode === "register"
      ? await navigator.credentials.create(creationOptions(options))
      : await navigator.credentials.get(requestOptions(options));
    if (!credential) throw new Error("The browser returned no credential. Try again.");
    const body = { credential: mode === "register" ? registration(credential) : assertion(credential), rd };
    if (mode !== "passwordless") body.remember = Boolean(remember && remember.checked);
    const answer = await post(finish, csrf, body);
    window.location.assign(answer.redirect);
  };

  document.addEventListener("DOMContentLoaded", () => {
    for (const box of document.querySelectorAll("[data-webauthn]")) {
      const message = box.querySelector("[data-webauthn-message]");
      const show = (text) => {
        if (!message) return;
        message.textContent = text;
        message.hidden = false;
      };
      const buttons = box.querySelectorAll("[data-webauthn-go]");
      if (!window.PublicKeyCredential || !navigator.credentials) {
        show("This browser cannot use security keys or device biometrics. Use another way, or another browser.");
        for (const button of buttons) button.disabled = true;
        continue;
      }
      for (const button of buttons) {
        button.addEventListener("click", async () => {
          for (const b of buttons) b.disabled = true;
          if (message) message.hidden = true;
          try {
            await run(box, button);
          } catch (error) {
            show(explain(error));
            for (const b of buttons) b.disabled = false;
          }
        });
      }
    }
  });
})();
