// The second factors through the real pages in headless Chromium: password,
// an authenticator app, recovery codes, a security key and device
// biometrics (CDP virtual authenticators), step-up on a WebAuthn-only
// route, "try another way", and the security page.
//
// Started by tests/browser.rs with the gateway's URL and its (fixed) clock:
//   STEPGATE_URL=http://app.localhost:PORT STEPGATE_NOW=<unix time> node tests/browser/security.mjs
import { start, step, finish, shot, expect, totp, addVirtualAuthenticator } from "./lib.mjs";

const NAME = "security";
const USER = process.env.STEPGATE_USER || "alice";
const PASSWORD = process.env.STEPGATE_PASSWORD || "correct horse battery staple";
const NOW = Number(process.env.STEPGATE_NOW);

const { page } = await start(NAME);
const key = await addVirtualAuthenticator(page, "security_key");
let secret;
let recoveryCodes = [];

async function signIn(where) {
  await page.goto(where);
  await expect.path(page, "/.stepgate/signin");
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
}

async function signOut() {
  await page.goto("/.stepgate/signout");
  await page.click("button[type=submit]");
  await page.waitForSelector("text=signed out", { timeout: 5000 }).catch(() => {});
}

await step("sign in with a password and be offered a second factor", async () => {
  await signIn("/");
  await expect.path(page, "/.stepgate/second-factor");
  await page.waitForSelector("text=Set up a second factor");
  await shot(page, NAME, "enrol-offer");
});

await step("enrol an authenticator app", async () => {
  secret = (await page.textContent("#secret")).trim();
  await page.fill("#code", totp(secret, NOW));
  await page.click(".totp-enroll button[type=submit]");
  await expect.path(page, "/.stepgate/recovery-codes");
});

await step("see recovery codes once, then continue to the app", async () => {
  recoveryCodes = await page.$$eval("#recovery-codes code", (codes) => codes.map((c) => c.textContent.trim()));
  expect.equal(recoveryCodes.length, 10);
  await shot(page, NAME, "recovery-codes");
  await page.click("#recovery-continue");
  await expect.path(page, "/");
  await shot(page, NAME, "app");
});

await step("add a security key on the security page", async () => {
  await page.goto("/.stepgate/settings");
  await page.fill("#credential-name", "Blue key");
  await page.click("#register-security_key");
  await expect.path(page, "/.stepgate/settings");
  await page.waitForSelector("text=Blue key");
  expect.equal((await key.credentials()).length, 1);
  await shot(page, NAME, "settings-with-key");
});

await step("sign out", async () => {
  await signOut();
  await shot(page, NAME, "signed-out");
});

await step("sign in with the security key, offered first", async () => {
  await signIn("/");
  await expect.path(page, "/.stepgate/second-factor");
  await page.waitForSelector("#webauthn-go");
  await shot(page, NAME, "webauthn-challenge");
  await page.click("#webauthn-go");
  await expect.path(page, "/");
});

await step("sign in again with the app code, chosen by 'try another way'", async () => {
  await signOut();
  await signIn("/");
  await page.click("text=Try another way");
  await page.click("text=Use a code from your authenticator app");
  // The enrolment used the current step; the next one is still accepted.
  await page.fill("#code", totp(secret, NOW + 30));
  await shot(page, NAME, "totp-challenge");
  await page.click("button[type=submit]");
  await expect.path(page, "/");
});

await step("step up to the security key on a WebAuthn-only route", async () => {
  await page.goto("/admin/");
  await expect.path(page, "/.stepgate/second-factor");
  await page.waitForSelector("#webauthn-go");
  await shot(page, NAME, "step-up");
  await page.click("#webauthn-go");
  await expect.path(page, "/admin/");
  await shot(page, NAME, "admin");
});

await step("use a recovery code and land on the security page", async () => {
  await signOut();
  await signIn("/");
  await page.click("text=Try another way");
  await page.click("text=Use a recovery code");
  await page.fill("#code", recoveryCodes[0]);
  await page.click("button[type=submit]");
  await expect.path(page, "/.stepgate/settings");
  await page.waitForSelector("text=You have 9 left");
  await shot(page, NAME, "after-recovery-code");
});

await step("remove the authenticator app on the security page", async () => {
  const app = page.locator("li.factor", { hasText: "authenticator app" });
  await app.locator("button", { hasText: "Remove" }).click();
  await page.waitForSelector("#notice >> text=Removed.");
  expect.equal(await page.locator("li.factor").count(), 1);
  await shot(page, NAME, "app-removed");
});

await step("a cancelled fingerprint gets a clear message", async () => {
  const device = await addVirtualAuthenticator(page, "platform");
  await device.setUserVerified(false);
  await page.click("#register-platform");
  await page.waitForSelector("text=cancelled or timed out");
  await shot(page, NAME, "biometric-cancelled");
  await device.setUserVerified(true);
  await page.fill("#credential-name", "This laptop");
  await page.click("#register-platform");
  await page.waitForSelector("text=This laptop");
  expect.equal(await page.locator("li.factor").count(), 2);
  await shot(page, NAME, "biometrics-added");
});

await finish();
