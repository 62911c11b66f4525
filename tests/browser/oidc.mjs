// Sign-in at an OpenID provider in headless Chromium: the app sends the
// browser to the gateway's sign-in page, which sends it to the provider
// (tests/oidc/provider.mjs signs in the account the test chose), which
// sends it back to the gateway's callback and on to the app; sign-out then
// passes by the provider's logout page and comes back.
//
// Started by tests/browser.rs:
//   STEPGATE_URL=http://app.localhost:PORT STEPGATE_PROVIDER=http://127.0.0.1:PORT2 node tests/browser/oidc.mjs
import { start, step, finish, shot, expect } from "./lib.mjs";

const NAME = "oidc";
const PROVIDER = process.env.STEPGATE_PROVIDER;

const { page } = await start(NAME);

await step("an anonymous visit signs in at the provider and lands on the app", async () => {
  await page.goto("/reports/");
  await expect.path(page, "/reports/");
  const seen = JSON.parse(await page.textContent("body"));
  const assertion = seen.headers.find(([name]) => name === "x-stepgate-assertion");
  expect(assertion, "the app received an assertion");
  const claims = JSON.parse(Buffer.from(assertion[1].split(".")[1], "base64url").toString());
  expect.equal(claims.sub, "alice");
  expect.deepEqual(claims.groups, ["staff", "admins"]);
  await shot(page, NAME, "app");
});

await step("signing out passes by the provider's logout and comes back", async () => {
  await page.goto("/.stepgate/signout");
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.origin === PROVIDER);
  await shot(page, NAME, "provider-logout");
  // node-oidc-provider asks whether to sign out there too.
  await page.click("button[autofocus], button[type=submit]");
  await page.waitForURL((u) => u.origin !== PROVIDER);
  await shot(page, NAME, "back");
});

await finish();
