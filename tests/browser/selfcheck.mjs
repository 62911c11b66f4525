// Proves the browser-test machinery works without a gateway:
//   node tests/browser/selfcheck.mjs
//
// * totp() against the RFC 6238 SHA-1 test vectors (and oathtool, when present);
// * a tiny node:http server on 127.0.0.1 serves a page at
//   http://app.localhost:PORT/ under a strict CSP (script-src 'self'), whose
//   own script (a separate .js file) runs navigator.credentials.create and
//   .get when its buttons are clicked and writes the outcome into the DOM;
// * both kinds of virtual authenticator register and sign in there with
//   rp.id "app.localhost" and userVerification "required"; the signature
//   counter goes 1 (registration), 2, 3 (assertions); a failed user
//   verification is a NotAllowedError; rp.id "localhost" is refused on
//   app.localhost but works on http://localhost:PORT;
// * shot() writes screenshots under $STEPGATE_ARTIFACTS/selfcheck/.
// The findings are written down at the top of lib.mjs.

import http from "node:http";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { start, step, finish, shot, totp, expect, addVirtualAuthenticator } from "./lib.mjs";

const TEST = "selfcheck";

// ---- TOTP: RFC 6238 appendix B, SHA-1, secret "12345678901234567890" ----
await step("totp matches the RFC 6238 test vectors", () => {
  const secret = Buffer.from("12345678901234567890").toString("hex");
  const b32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // base32 of that ASCII secret
  const vectors = [
    [59, "94287082"],
    [1111111109, "07081804"],
    [1111111111, "14050471"],
    [1234567890, "89005924"],
    [2000000000, "69279037"],
    [20000000000, "65353130"],
  ];
  for (const [t, code] of vectors) expect.equal(totp(b32, t, 8), code, `T=${t}`);
  expect.equal(totp(b32.toLowerCase() + "====", 59, 6), "287082", "6 digits, lower case, padded");
  if (existsSync("/usr/bin/oathtool")) {
    const now = 1_700_000_000;
    const theirs = execFileSync("oathtool", ["--totp", "-N", `@${now}`, secret], { encoding: "utf8" }).trim();
    expect.equal(totp(b32, now), theirs, "oathtool agrees");
  }
});

// ---- a page that uses WebAuthn under a strict CSP ----
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>webauthn self-check</title>
<link rel="stylesheet" href="/page.css">
<script>document.title = "inline script ran";</script>
</head><body>
<h1>WebAuthn self-check</h1>
<p>origin: <code id="origin"></code> rp.id: <code id="rp"></code> userVerification: <code id="uv"></code></p>
<button id="register">Register</button> <button id="signin">Sign in</button>
<p id="result" data-state="idle">idle</p>
<script src="/page.js"></script>
</body></html>`;

const CSS = `body { font: 16px sans-serif; margin: 2em; }
#result[data-state=ok] { color: #060; } #result[data-state=error] { color: #a00; }
code { background: #eee; padding: 0 .3em; }`;

// The page's only script. The rp.id and userVerification come from the query
// string (rp defaults to the page's host name). The outcome lands in #result:
// data-state "ok" or "error", data-json with what the test checks.
const JS = `"use strict";
const q = new URLSearchParams(location.search);
const rpId = q.get("rp") || location.hostname;
const uv = q.get("uv") || "required";
document.getElementById("origin").textContent = location.origin;
document.getElementById("rp").textContent = rpId;
document.getElementById("uv").textContent = uv;
const result = document.getElementById("result");
const random = (n) => crypto.getRandomValues(new Uint8Array(n));
const b64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
function authData(buf) {
  const d = new DataView(buf instanceof ArrayBuffer ? buf : buf.buffer);
  return { flags: d.getUint8(32), counter: d.getUint32(33) };
}
function report(state, text, json) {
  result.dataset.state = state;
  result.dataset.json = JSON.stringify(json);
  result.textContent = text;
}
async function run(label, fn) {
  report("busy", label + "...", {});
  try {
    const json = await fn();
    report("ok", label + ": ok, counter " + json.counter, json);
  } catch (e) {
    report("error", label + ": " + e.name + ": " + e.message, { error: e.name, message: e.message });
  }
}
document.getElementById("register").addEventListener("click", () => run("register", async () => {
  const cred = await navigator.credentials.create({ publicKey: {
    challenge: random(32),
    rp: { id: rpId, name: "stepgate self-check" },
    user: { id: random(16), name: "alice", displayName: "Alice" },
    pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
    authenticatorSelection: { residentKey: "required", userVerification: uv },
    attestation: "none",
    timeout: 10000,
  }});
  const client = JSON.parse(new TextDecoder().decode(cred.response.clientDataJSON));
  return { id: cred.id, attachment: cred.authenticatorAttachment, transports: cred.response.getTransports(),
           client, ...authData(cred.response.getAuthenticatorData()) };
}));
document.getElementById("signin").addEventListener("click", () => run("sign in", async () => {
  // No allowCredentials: a discoverable (passkey) sign-in, as a username-less login does.
  const a = await navigator.credentials.get({ publicKey: {
    challenge: random(32), rpId, userVerification: uv, timeout: 10000,
  }});
  const client = JSON.parse(new TextDecoder().decode(a.response.clientDataJSON));
  return { id: a.id, userHandle: a.response.userHandle ? b64url(a.response.userHandle) : null,
           client, ...authData(a.response.authenticatorData) };
}));
`;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const send = (type, body) => {
    res.writeHead(200, {
      "content-type": type,
      "content-security-policy": CSP,
      "x-content-type-options": "nosniff",
      "cache-control": "no-store",
    });
    res.end(body);
  };
  if (url.pathname === "/") return send("text/html; charset=utf-8", HTML);
  if (url.pathname === "/page.js") return send("text/javascript; charset=utf-8", JS);
  if (url.pathname === "/page.css") return send("text/css; charset=utf-8", CSS);
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found");
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const port = server.address().port;
const base = `http://app.localhost:${port}`;

const { page } = await start(TEST, { baseURL: base });

/** Clicks a button and waits for the page script's outcome. */
async function click(id) {
  await page.click(`#${id}`);
  await page.waitForFunction(() => ["ok", "error"].includes(document.getElementById("result").dataset.state));
  const el = page.locator("#result");
  return { state: await el.getAttribute("data-state"), ...JSON.parse(await el.getAttribute("data-json")) };
}

const UP = 0x01, UV = 0x04, AT = 0x40;

for (const kind of ["security_key", "platform"]) {
  let auth;
  await step(`${kind}: add the virtual authenticator`, async () => {
    auth = await addVirtualAuthenticator(page, kind);
    expect.deepEqual(await auth.credentials(), []);
  });

  await step(`${kind}: the page loads on app.localhost under the CSP, inline script blocked`, async () => {
    await page.goto("/?uv=required");
    expect.equal(await page.evaluate(() => window.isSecureContext), true, "app.localhost is a secure context");
    expect.equal(await page.textContent("#rp"), "app.localhost");
    expect.notEqual(await page.title(), "inline script ran", "the CSP let an inline script run");
    await shot(page, TEST, `${kind}-loaded`);
  });

  await step(`${kind}: register with rp.id app.localhost, UV required`, async () => {
    const r = await click("register");
    expect.equal(r.state, "ok", r.message);
    expect.equal(r.client.type, "webauthn.create");
    expect.equal(r.client.origin, base);
    expect.equal(r.attachment, kind === "platform" ? "platform" : "cross-platform");
    expect.deepEqual(r.transports, [kind === "platform" ? "internal" : "usb"]);
    expect.equal(r.flags & (UP | UV | AT), UP | UV | AT, `flags ${r.flags}`);
    expect.equal(r.counter, 1, "registration counter");
    const creds = await auth.credentials();
    expect.equal(creds.length, 1);
    expect.equal(creds[0].rpId, "app.localhost");
    expect.equal(creds[0].isResidentCredential, true);
  });

  await step(`${kind}: sign in twice, the counter increases per assertion`, async () => {
    for (const expected of [2, 3]) {
      const r = await click("signin");
      expect.equal(r.state, "ok", r.message);
      expect.equal(r.client.type, "webauthn.get");
      expect.equal(r.flags & (UP | UV), UP | UV, `flags ${r.flags}`);
      expect.equal(r.counter, expected);
      expect.ok(r.userHandle, "a discoverable credential returns its user handle");
    }
    const [cred] = await auth.credentials();
    expect.equal(cred.signCount, 3);
    await shot(page, TEST, `${kind}-signed-in`);
  });

  await step(`${kind}: a failed user verification is NotAllowedError`, async () => {
    await auth.setUserVerified(false);
    const r = await click("signin");
    expect.equal(r.state, "error");
    expect.equal(r.error, "NotAllowedError");
    await auth.setUserVerified(true);
    expect.equal((await click("signin")).counter, 4);
  });

  await step(`${kind}: rp.id localhost is refused on app.localhost`, async () => {
    await page.goto("/?rp=localhost");
    const r = await click("register");
    expect.equal(r.state, "error");
    expect.equal(r.error, "SecurityError");
  });

  await step(`${kind}: rp.id localhost works on http://localhost`, async () => {
    await page.goto(`http://localhost:${port}/?rp=localhost`);
    expect.equal((await click("register")).counter, 1);
    expect.equal((await click("signin")).counter, 2);
    expect.equal((await auth.credentials()).length, 2);
  });

  await step(`${kind}: remove the authenticator`, async () => {
    await auth.remove();
  });
}

await finish();
server.close();
