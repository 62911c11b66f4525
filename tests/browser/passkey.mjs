// Passwordless sign-in with a passkey (webauthn.passwordless = true): the
// device's biometrics are registered once, then sign in on their own.
//
//   STEPGATE_URL=http://app.localhost:PORT node tests/browser/passkey.mjs
import { start, step, finish, shot, expect, addVirtualAuthenticator } from "./lib.mjs";

const NAME = "passkey";
const USER = process.env.STEPGATE_USER || "alice";
const PASSWORD = process.env.STEPGATE_PASSWORD || "correct horse battery staple";

const { page } = await start(NAME);
const device = await addVirtualAuthenticator(page, "platform");

await step("sign in with a password and register this device", async () => {
  await page.goto("/");
  await expect.path(page, "/.stepgate/signin");
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await expect.path(page, "/.stepgate/second-factor");
  await page.fill("#credential-name", "Laptop");
  await page.click("#register-platform");
  await expect.path(page, "/.stepgate/recovery-codes");
  const credentials = await device.credentials();
  expect.equal(credentials.length, 1);
  expect.equal(credentials[0].isResidentCredential, true, "a discoverable credential");
  await page.click("#recovery-continue");
  await expect.path(page, "/");
});

await step("sign out", async () => {
  await page.goto("/.stepgate/signout");
  await page.click("button[type=submit]");
});

await step("sign in with the passkey alone", async () => {
  await page.goto("/admin/");
  await expect.path(page, "/.stepgate/signin");
  await shot(page, NAME, "signin-with-passkey");
  await page.click("#passkey-signin");
  await expect.path(page, "/admin/");
  await shot(page, NAME, "admin");
});

await finish();
