// Forward-auth in headless Chromium: an nginx in front asks the gateway
// about every request (auth_request); the browser signs in, enrols an
// authenticator app and reaches the app through nginx, all on the app's
// own host, then signs out.
//
// Started by tests/forward_auth_proxies.rs with nginx's URL and the
// gateway's (fixed) clock:
//   STEPGATE_URL=http://app.localhost:PORT STEPGATE_NOW=<unix time> node tests/browser/forward-auth.mjs
import { start, step, finish, shot, expect, totp } from "./lib.mjs";

const NAME = "forward-auth";
const USER = process.env.STEPGATE_USER || "alice";
const PASSWORD = process.env.STEPGATE_PASSWORD || "correct horse battery staple";
const NOW = Number(process.env.STEPGATE_NOW);

const { page } = await start(NAME);

await step("nginx sends a stranger to the portal on the app's host", async () => {
  await page.goto("/admin/reports");
  await expect.path(page, "/.stepgate/signin");
  await shot(page, NAME, "signin");
});

await step("sign in with a password, then enrol an authenticator app", async () => {
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await expect.path(page, "/.stepgate/second-factor");
  const secret = (await page.textContent("#secret")).trim();
  await page.fill("#code", totp(secret, NOW));
  await page.click(".totp-enroll button[type=submit]");
  await expect.path(page, "/.stepgate/recovery-codes");
  await page.click("#recovery-continue");
});

await step("back at the page first asked for, with the user's identity", async () => {
  await expect.path(page, "/admin/reports");
  const seen = JSON.parse(await page.textContent("body"));
  const header = (name) => (seen.headers.find(([key]) => key === name) || [])[1];
  expect.equal(header("remote-user"), USER);
  expect.ok(header("x-stepgate-assertion").startsWith("ey"), "an assertion reached the app");
  await shot(page, NAME, "app");
});

await step("sign out through nginx, and be asked to sign in again", async () => {
  await page.goto("/.stepgate/signout");
  await page.click("button[type=submit]");
  await page.goto("/admin/reports");
  await expect.path(page, "/.stepgate/signin");
});

await finish();
