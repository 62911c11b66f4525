// Shared helpers for stepgate's headless-Chromium end-to-end flows.
//
// A flow file (tests/browser/<flow>.mjs) is started by a Rust integration test
// after it has started the gateway, roughly:
//
//   STEPGATE_URL=http://app.localhost:PORT node tests/browser/<flow>.mjs
//
// and reads as a list of named steps:
//
//   import { start, step, addVirtualAuthenticator, shot, expect } from "./lib.mjs";
//   const { page } = await start("passkey-sign-in");
//   const key = await addVirtualAuthenticator(page, "security_key");
//   await step("open the sign-in page", async () => { await page.goto("/"); ... });
//   await step("register a key", async () => { ... expect.equal((await key.credentials()).length, 1); });
//   await finish();
//
// Every step prints "ok - <name>" or "not ok - <name>" plus the error; the
// first failure takes a screenshot, closes the browser and exits with status 1,
// so the Rust test sees a non-zero status and the output.
//
// Environment:
//   STEPGATE_URL        base URL of the gateway under test (the context's baseURL,
//                       so page.goto("/login") works). Use http://app.localhost:PORT.
//   STEPGATE_ARTIFACTS  where screenshots go (default target/browser-artifacts
//                       in the repository, wherever node was started from).
//   CHROMIUM            the browser binary (default /usr/bin/chromium, Debian's).
//   STEPGATE_TIMEOUT_MS the default timeout of each Playwright action (10000).
//   STEPGATE_FLOW_TIMEOUT_MS  a watchdog for the whole flow (120000): a hung
//                       browser fails the flow instead of hanging the Rust test.
//
// Findings, measured with Debian's Chromium 156 and playwright-core 1.65.1
// (selfcheck.mjs asserts the ones a flow relies on: node tests/browser/selfcheck.mjs):
//
// * Origin and RP ID. http://app.localhost:PORT works with rp.id
//   "app.localhost": Chromium resolves every *.localhost name to loopback by
//   itself (no /etc/hosts entry, no --host-resolver-rules) and treats http on
//   localhost and *.localhost as a secure context, so no
//   --unsafely-treat-insecure-origin-as-secure flag is needed. Chromium treats
//   "localhost" as a TLD, so a page on app.localhost can NOT claim rp.id
//   "localhost" (SecurityError "not a registrable domain suffix"), while a page
//   on auth.app.localhost CAN claim "app.localhost". http://localhost:PORT with
//   rp.id "localhost" works too. 127.0.0.1 does not work at all ("This is an
//   invalid domain"). clientDataJSON.origin is "http://app.localhost:PORT",
//   port included, and Chromium sometimes adds a random extra key
//   ("other_keys_can_be_added_here") to clientDataJSON: a server must parse it
//   as JSON, never compare it to a template.
// * Signature counter. The virtual authenticator keeps one counter per
//   credential and bumps it on every operation: the registration's
//   authenticator data carries 1, the assertions then 2, 3, 4, ...
//   WebAuthn.getCredentials reports the latest value as signCount. So a server
//   that checks the counter increases sees it increase; to simulate a cloned
//   key, lower it (WebAuthn.addCredential with a smaller signCount) or replay.
// * User verification. With isUserVerified true, userVerification "required"
//   (and "preferred") succeed on create and get, with flags UP|UV (0x05 on
//   assertions, 0x45 = UP|UV|AT on registration). With isUserVerified false
//   (a failed fingerprint) both "required" and "preferred" fail with
//   NotAllowedError: the authenticator has UV configured, so it tries UV and
//   the user "fails" it. Use auth.setUserVerified(false) to test that path.
// * Presence. automaticPresenceSimulation (default true) answers every
//   request at once; no UI is ever shown with WebAuthn.enable's default
//   enableUI: false.
// * Timing on the 2-core machine: launch() takes about 1 s; each
//   create()+get() round trip takes a few hundred ms.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The base URL of the gateway under test, e.g. http://app.localhost:8443. */
export function baseUrl() {
  const url = process.env.STEPGATE_URL;
  if (!url) throw new Error("STEPGATE_URL is not set (e.g. http://app.localhost:PORT)");
  return url.replace(/\/+$/, "");
}

/** Where screenshots go. */
export function artifactsDir() {
  return (
    process.env.STEPGATE_ARTIFACTS ||
    path.relative(process.cwd(), fileURLToPath(new URL("../../target/browser-artifacts", import.meta.url)))
  );
}

// Flags on top of Playwright's own defaults (it already passes --headless,
// --no-first-run, --disable-sync, --disable-extensions, --disable-component-update
// and many more). Each one here either is required on this machine or removes
// background work and noise.
const CHROMIUM_ARGS = [
  "--no-sandbox", // we run as root, where Chromium refuses to start sandboxed
  "--disable-gpu", // no GPU here; skips probing for one
  "--disable-dev-shm-usage", // /dev/shm may be small in containers: use /tmp instead
  "--disable-background-networking", // no update, safe-browsing or metrics fetches: this
  // machine has no network beyond loopback, and each refused fetch is noise
  "--disable-quic",
  "--disable-breakpad", // no crash reporter
  "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,PasswordLeakDetection",
  "--password-store=basic", // never reach for a desktop keyring
  "--no-default-browser-check",
  "--mute-audio",
  "--log-level=3", // only fatal messages on Chromium's stderr
];

/**
 * Launches headless Chromium and opens one page in a fresh context whose
 * baseURL is STEPGATE_URL (when set). Returns { browser, context, page }.
 * Options: { baseURL } overrides STEPGATE_URL (the self-check uses it).
 */
export async function launch(opts = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000, // a cold start on a busy 2-core machine can be slow
  });
  const context = await browser.newContext({
    baseURL: opts.baseURL ?? process.env.STEPGATE_URL,
    viewport: { width: 1000, height: 800 },
    locale: "en-US",
    timezoneId: "UTC",
  });
  const timeout = Number(process.env.STEPGATE_TIMEOUT_MS || 10_000);
  context.setDefaultTimeout(timeout);
  context.setDefaultNavigationTimeout(timeout);
  const page = await context.newPage();
  return { browser, context, page };
}

/**
 * Adds a CTAP2 virtual authenticator to the page's tab through the Chrome
 * DevTools Protocol. It stays across navigations of that page.
 *   kind "security_key": a roaming USB key (like a YubiKey with a PIN)
 *   kind "platform":     a built-in authenticator (like Touch ID / Windows Hello)
 * Both hold discoverable credentials (passkeys) and verify the user.
 * Returns { id, cdp, credentials(), clear(), setUserVerified(bool), remove() }.
 */
export async function addVirtualAuthenticator(page, kind) {
  const kinds = {
    security_key: { transport: "usb", automaticPresenceSimulation: true },
    platform: { transport: "internal", automaticPresenceSimulation: true },
  };
  if (!kinds[kind]) throw new Error(`unknown authenticator kind ${kind}: use security_key or platform`);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable"); // enableUI defaults to false: no dialogs
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      ...kinds[kind],
    },
  });
  return {
    id: authenticatorId,
    cdp,
    /** The credentials it holds: [{ credentialId, rpId, userHandle, signCount, isResidentCredential, privateKey }]. */
    async credentials() {
      return (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials;
    },
    /** Forgets every credential (as if the key were reset). */
    async clear() {
      await cdp.send("WebAuthn.clearCredentials", { authenticatorId });
    },
    /** false makes the next operations fail user verification (NotAllowedError). */
    async setUserVerified(isUserVerified) {
      await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified });
    },
    /** Unplugs it: later ceremonies find no authenticator. */
    async remove() {
      await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId });
    },
  };
}

const shotCounters = new Map();

/**
 * Saves a full-page screenshot to ${STEPGATE_ARTIFACTS}/<testName>/<NN>-<step>.png,
 * NN counting up per test from 01. Returns the file's path.
 */
export async function shot(page, testName, step) {
  const n = (shotCounters.get(testName) ?? 0) + 1;
  shotCounters.set(testName, n);
  const dir = path.join(artifactsDir(), safeName(testName));
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${String(n).padStart(2, "0")}-${safeName(step)}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

function safeName(s) {
  return String(s).replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "x";
}

/** Decodes RFC 4648 base32 (case-insensitive; padding, spaces and dashes ignored). */
export function base32Decode(s) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const clean = s.toUpperCase().replace(/[\s=-]/g, "");
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of clean) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${JSON.stringify(c)}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/**
 * The RFC 6238 TOTP code (HMAC-SHA-1) for a base32 secret at unixTime
 * (seconds; default now), as a zero-padded string.
 */
export function totp(secretBase32, unixTime = Math.floor(Date.now() / 1000), digits = 6, period = 30) {
  const counter = Math.floor(unixTime / period);
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac("sha1", base32Decode(secretBase32)).update(msg).digest();
  const offset = mac[mac.length - 1] & 0x0f; // RFC 4226 dynamic truncation
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 10 ** digits).padStart(digits, "0");
}

// ---- the runner ----------------------------------------------------------

let current = null; // { testName, browser, context, page, steps, started }

/**
 * Starts a flow: launches the browser (see launch()) and makes step() report
 * under testName and screenshot this page on failure. Returns launch()'s
 * { browser, context, page }.
 */
export async function start(testName, opts = {}) {
  const started = Date.now();
  const watchdogMs = Number(process.env.STEPGATE_FLOW_TIMEOUT_MS || 120_000);
  const watchdog = setTimeout(() => {
    console.log(`not ok - ${testName}: the flow did not finish within ${watchdogMs} ms`);
    process.exit(1);
  }, watchdogMs);
  watchdog.unref();
  // Screenshots of an earlier run would mix with this run's numbering.
  rmSync(path.join(artifactsDir(), safeName(testName)), { recursive: true, force: true });
  const launched = await launch(opts);
  current = { testName, ...launched, steps: 0, started };
  console.log(`# ${testName}: Chromium ${launched.browser.version()} up in ${Date.now() - started} ms`);
  return launched;
}

/**
 * Runs one named step. On success prints "ok - name (N ms)" and returns what
 * fn returned; on failure prints "not ok - name", the error, the page's URL
 * and a screenshot's path, closes the browser and exits with status 1.
 */
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    const result = await fn();
    if (current) current.steps++;
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
    return result;
  } catch (err) {
    console.log(`not ok - ${name} (${Date.now() - t0} ms)`);
    console.log(indent(err && err.stack ? err.stack : String(err)));
    if (current) {
      const { page, testName, browser } = current;
      try {
        console.log(indent(`page: ${page.url()}`));
        const file = await shot(page, testName, `FAILED-${name}`);
        console.log(indent(`screenshot: ${file}`));
        const text = (await page.locator("body").innerText({ timeout: 2000 })).trim();
        console.log(indent(`page text:\n${text.slice(0, 2000)}`));
      } catch (e) {
        console.log(indent(`(no screenshot: ${e.message})`));
      }
      await browser.close().catch(() => {});
    }
    process.exit(1);
  }
}

/** Ends a flow: closes the browser and prints a summary line. */
export async function finish() {
  if (!current) return;
  const { testName, browser, steps, started } = current;
  await browser.close();
  console.log(`# ${testName}: ${steps} steps ok in ${Date.now() - started} ms`);
  current = null;
}

function indent(s) {
  // Playwright colours its call logs even into a pipe: strip the escapes.
  return String(s).replace(/\x1b\[[0-9;]*m/g, "").replace(/^/gm, "    ");
}

// An error outside any step (e.g. in start()) also fails the flow loudly.
process.on("unhandledRejection", (err) => {
  console.log(`not ok - unhandled error\n${indent(err && err.stack ? err.stack : String(err))}`);
  process.exit(1);
});

// ---- assertions ----------------------------------------------------------

/**
 * node:assert/strict's functions (expect(v), expect.equal, expect.deepEqual,
 * expect.match, expect.rejects, ...) plus a few waiting helpers for pages.
 * step() prints the assertion's message on failure.
 */
export const expect = Object.assign((value, message) => assert.ok(value, message), assert, {
  /** Waits until the page's URL path is `pathname` (a string or RegExp). */
  async path(page, pathname, timeout) {
    await page.waitForURL(
      (u) => (pathname instanceof RegExp ? pathname.test(u.pathname) : u.pathname === pathname),
      { timeout },
    );
  },
  /** Waits until the page shows `text` (a string or RegExp) somewhere. */
  async text(page, text, timeout) {
    await page.getByText(text).first().waitFor({ state: "visible", timeout });
  },
  /** Asserts the page does not show `text` (now, without waiting). */
  async noText(page, text) {
    const n = await page.getByText(text).count();
    assert.equal(n, 0, `page unexpectedly shows ${text}`);
  },
});
