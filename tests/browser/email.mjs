// An email factor through the real pages in headless Chromium: sign in
// with a password, add the directory's address with a code read from the
// SMTP server's mailbox, then sign in again with an emailed code.
//
// Started by tests/browser.rs with the gateway's URL, the directory the
// SMTP server delivers to (one N.eml file per message) and a URL that moves
// the gateway's clock on:
//   STEPGATE_URL=http://app.localhost:PORT STEPGATE_MAIL_DIR=DIR STEPGATE_ADVANCE_CLOCK=URL node tests/browser/email.mjs
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { start, step, finish, shot, expect } from "./lib.mjs";

const NAME = "email";
const USER = process.env.STEPGATE_USER || "alice";
const PASSWORD = process.env.STEPGATE_PASSWORD || "correct horse battery staple";
const MAIL_DIR = process.env.STEPGATE_MAIL_DIR;
// POST here moves the gateway's clock past the resend wait.
const ADVANCE_CLOCK = process.env.STEPGATE_ADVANCE_CLOCK;

const { page } = await start(NAME);

async function signIn(where) {
  await page.goto(where);
  await expect.path(page, "/.stepgate/signin");
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
}

/** The code in the `n`th delivered message's subject, once it arrives. */
async function mailedCode(n) {
  const file = path.join(MAIL_DIR, `${n}.eml`);
  for (let i = 0; i < 200 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
  const match = /^Subject: (\d{6}) is your /m.exec(readFileSync(file, "utf8"));
  expect(match, `no code in message ${n}`);
  return match[1];
}

await step("sign in and choose to get codes by email", async () => {
  await signIn("/");
  await expect.path(page, "/.stepgate/second-factor");
  await page.waitForSelector("text=Set up a second factor");
  await shot(page, NAME, "enrol-offer");
  await page.click("#enrol-email");
  await expect.path(page, "/.stepgate/enrol/email");
  await page.waitForSelector(`text=${USER}@example.com`);
  await shot(page, NAME, "address");
});

await step("send a code to the address and type it", async () => {
  await page.click("#send-code");
  await page.waitForSelector("text=We emailed a code to a•••@example.com");
  await shot(page, NAME, "code-sent");
  await page.fill("#code", await mailedCode(1));
  await page.click("button[type=submit]");
  await expect.path(page, "/.stepgate/recovery-codes");
  await page.click("#recovery-continue");
  await expect.path(page, "/");
});

await step("the security page lists the address", async () => {
  await page.goto("/.stepgate/settings");
  await page.waitForSelector("li.factor >> text=email address");
  await shot(page, NAME, "settings");
});

await step("sign out, sign in again with an emailed code, offered first", async () => {
  await page.goto("/.stepgate/signout");
  await page.click("button[type=submit]");
  await signIn("/");
  await expect.path(page, "/.stepgate/second-factor");
  await page.waitForSelector("text=We will email a code to a•••@example.com");
  await fetch(ADVANCE_CLOCK, { method: "POST" });
  await page.click("#send-code");
  await page.waitForSelector("#code");
  await page.fill("#code", await mailedCode(2));
  await shot(page, NAME, "sign-in-code");
  await page.click("form[action='/.stepgate/second-factor/code'] button[type=submit]");
  await expect.path(page, "/");
});

await finish();
