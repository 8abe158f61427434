// Sign-in on the chat page, against webchat-local --dev-issuer in headless Chromium: two tabs as
// two signed-in people message each other by name, one person's two tabs both get a message to
// them, a forged or expired token is refused at the handshake and explained (an expired one not
// retried), and what is not a token is not sent.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchChromium, startWebchat } from "./support.mjs";

let webchat, browser;
before(async () => {
  webchat = await startWebchat(["--dev-issuer", "--no-limits"]); // not about limits: limits.test.mjs is
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  webchat?.stop();
});

/** Opens the page and signs in as `name`; resolves to the welcome's line once welcomed. */
async function signIn(page, name) {
  await page.goto(webchat.http);
  await page.locator("#status", { hasText: "signs you in by name" }).waitFor();
  await page.getByLabel("Display name").fill(name);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page.locator("#status", { hasText: "signed in as" }).waitFor();
}

test("two tabs sign in as two people and message each other by name", async () => {
  const ada = await browser.newPage();
  const bob = await browser.newPage();
  const bobAgain = await browser.newPage();
  await signIn(ada, "Ada Lovelace");
  await signIn(bob, "Bob");
  await signIn(bobAgain, "Bob");
  // ada sees Bob once (one person, two tabs) and messages him by his name
  await ada.getByRole("button", { name: "Refresh list" }).click();
  const bobButton = ada.getByRole("button", { name: /^Bob \(dev-[0-9a-f]{16}\)$/ });
  await bobButton.waitFor();
  assert.equal(await bobButton.count(), 1, "one entry per person");
  assert.match(await bobButton.getAttribute("title"), /2 connections/);
  await bobButton.click();
  await ada.getByLabel(/Message to Bob/).fill("Hello Bob");
  await ada.getByLabel(/Message to Bob/).press("Enter");
  for (const tab of [bob, bobAgain]) {
    const line = tab.locator("#log li.chat", { hasText: "Hello Bob" });
    await line.waitFor();
    assert.match(await line.textContent(), /Ada Lovelace → you:/);
  }
  await ada.locator("#log li.chat", { hasText: "Hello Bob" }).locator(".state", { hasText: "delivered" }).waitFor();
  // ada's own entry says it is her
  await ada.getByRole("button", { name: /^Ada Lovelace \(dev-[0-9a-f]{16}\) — you$/ }).waitFor();
  for (const page of [ada, bob, bobAgain]) await page.close();
});

test("a forged token is refused at the handshake and explained", async () => {
  const page = await browser.newPage();
  // a well-formed ES256 token the server never issued
  const forged = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImRldi0xIiwidHlwIjoiSldUIn0"
    + ".eyJzdWIiOiJtYWxsb3J5IiwiYXVkIjoid2ViY2hhdC1sb2NhbCIsImV4cCI6NDEwMjQ0NDgwMH0"
    + ".c2lnbmF0dXJl";
  await page.goto(webchat.http + "#token=" + forged);
  assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  const notice = page.locator("#log li.notice", { hasText: "refused the sign-in" });
  await notice.waitFor();
  assert.equal(await page.locator("#status").textContent(), "Could not connect.");
  await page.close();
});

test("a token past its exp is refused once, said to have expired, and not retried", async () => {
  const page = await browser.newPage();
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const expired = [b64({ alg: "ES256", kid: "dev-1" }), b64({ sub: "late", exp: 1700000000 }), "c2ln"].join(".");
  await page.goto(webchat.http);
  await page.getByLabel("Sign-in token").fill(expired);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page.locator("#log li.notice", { hasText: "the token has expired" }).waitFor();
  assert.equal(await page.locator("#status").textContent(), "Signed out: the sign-in expired.");
  assert.equal(await page.getByRole("button", { name: "Connect", exact: true }).isEnabled(), true);
  await page.close();
});

test("what is not a token is not sent", async () => {
  const page = await browser.newPage();
  await page.goto(webchat.http);
  await page.getByLabel("Sign-in token").fill("not a token, just words");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page.locator("#status", { hasText: "That is not a token" }).waitFor();
  await page.close();
});
