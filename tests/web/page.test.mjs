// The chat page webchat-local serves, in headless Chromium: two pages chat with each other,
// a broadcast reaches both, hostile text renders as text, and server errors show as notices.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join, launchChromium, startWebchat } from "./support.mjs";

let webchat, browser;
before(async () => {
  webchat = await startWebchat();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  webchat?.stop();
});

test("two pages chat with each other, and a broadcast reaches both", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  const aliceId = await join(alice, webchat.http, "alice");
  await join(bob, webchat.http, "bob");

  // bob sees alice in the list and chats to her directly
  await bob.getByRole("button", { name: "Refresh list" }).click();
  await bob.getByRole("button", { name: new RegExp(`^alice \\(${aliceId.replace(/[=+]/g, "\\$&")}\\)$`) }).click();
  await bob.getByLabel(/Message to/).fill("Yo alice!");
  await bob.getByLabel(/Message to/).press("Enter");
  await alice.locator("#log li.chat", { hasText: "Yo alice!" }).waitFor();
  assert.match(await alice.locator("#log li.chat").last().textContent(), /bob → you:/);

  // alice broadcasts: both pages show it
  await alice.getByRole("button", { name: "Everyone" }).click();
  await alice.getByLabel("Message to everyone").fill("Anybody home?");
  await alice.getByRole("button", { name: "Send" }).click();
  for (const page of [alice, bob]) {
    await page.locator("#log li.broadcast", { hasText: "Anybody home?" }).waitFor();
  }
  await alice.close();
  await bob.close();
});

test("hostile names and messages render as text, never as markup", async () => {
  const page = await browser.newPage();
  let alerted = false;
  page.on("dialog", async (dialog) => { alerted = true; await dialog.dismiss(); });
  await join(page, webchat.http, "x_y.z-1");
  const hostile = `<img src=x onerror="alert(1)"><script>alert(2)</script>"'&`;
  await page.getByLabel("Message to everyone").fill(hostile);
  await page.getByLabel("Message to everyone").press("Enter");
  const line = page.locator("#log li.broadcast").last();
  await line.waitFor();
  assert.ok((await line.textContent()).includes(hostile));
  assert.equal(await page.locator("#log img, #log script").count(), 0);
  assert.equal(alerted, false);
  await page.close();
});

test("a server error shows as a readable notice", async () => {
  const page = await browser.newPage();
  await join(page, webchat.http);
  // over the 16 KiB limit: the server answers message_too_large
  await page.getByLabel("Message to everyone").fill("x".repeat(16 * 1024 + 1));
  await page.getByLabel("Message to everyone").press("Enter");
  const notice = page.locator("#log li.notice").last();
  await notice.waitFor();
  assert.match(await notice.textContent(), /message_too_large/);
  await page.close();
});

test("a dropped connection reconnects by itself", async () => {
  const page = await browser.newPage();
  const first = await join(page, webchat.http, "phoenix");
  // the server drops the connection (DeleteConnection on the management API)
  const deleted = await fetch(`${webchat.http}@connections/${encodeURIComponent(first)}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
  await page.locator("#status", { hasText: "Reconnecting" }).waitFor();
  await page.locator("#log li.welcome").nth(1).waitFor({ timeout: 10000 });
  const second = (await page.locator("#log li.welcome").nth(1).textContent()).match(/connected on (\S+)/)[1];
  assert.notEqual(second, first);
  await page.locator("#status", { hasText: "Connected to" }).waitFor();
  await page.close();
});

test("a hostile display name is refused by the server and explained as text", async () => {
  const page = await browser.newPage();
  await page.goto(webchat.http);
  await page.getByLabel("Display name").fill(`<img src=x onerror=alert(1)>`);
  // the field's own pattern check would stop a person; the server must refuse it too
  await page.evaluate(() => document.getElementById("name").removeAttribute("pattern"));
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page.locator("#log li.notice", { hasText: "refused" }).waitFor();
  assert.equal(await page.locator("img").count(), 0);
  await page.getByRole("button", { name: "Disconnect" }).click().catch(() => {});
  await page.close();
});

test("frames that arrive before the welcome are shown, and the list does not wait for it", async () => {
  // A scripted server: a broadcast first, the welcome 300 ms later, as can happen in AWS
  // where the welcome takes an EventBridge hop (the protocol promises one welcome, not its place).
  const { WebSocketServer } = await import("ws");
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.on("listening", resolve));
  const received = [];
  let welcomed = false;
  server.on("connection", (socket) => {
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      received.push({ ...frame, beforeWelcome: !welcomed });
      if (frame.action === "list") {
        socket.send(JSON.stringify({ type: "connections", connections: [
          { connectionId: "early=", name: "early", connectedAt: "2026-11-28T08:00:00.000Z" },
          { connectionId: "me=", name: null, connectedAt: "2026-11-28T08:00:01.000Z" },
        ] }));
      }
    });
    socket.send(JSON.stringify({ type: "broadcast", from: "early=", name: "early", message: "before your welcome", sentAt: "2026-11-28T08:00:02.000Z" }));
    setTimeout(() => {
      welcomed = true;
      socket.send(JSON.stringify({ type: "welcome", connectionId: "me=", message: "Welcome! - connected on me=" }));
    }, 300);
  });
  try {
    const page = await browser.newPage();
    await page.goto(webchat.http + "?url=" + encodeURIComponent(`ws://127.0.0.1:${server.address().port}/`));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.locator("#log li.welcome").waitFor();
    const lines = await page.locator("#log li").allTextContents();
    const broadcastAt = lines.findIndex((line) => line.includes("before your welcome"));
    const welcomeAt = lines.findIndex((line) => line.includes("connected on me="));
    assert.ok(broadcastAt >= 0 && broadcastAt < welcomeAt, JSON.stringify(lines));
    assert.equal(received[0]?.action, "list");
    assert.equal(received[0]?.beforeWelcome, true, "the list is asked for on open, not after the welcome");
    await page.getByRole("button", { name: "me= — you" }).waitFor();
    await page.getByRole("button", { name: /^early/ }).waitFor();
    await page.close();
  } finally {
    server.close();
  }
});
