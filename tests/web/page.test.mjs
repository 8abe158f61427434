// The chat page webchat-local serves, in headless Chromium: two pages chat with each other,
// a broadcast reaches both, hostile text renders as text, and server errors show as notices.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join, launchChromium, startWebchat } from "./support.mjs";

let webchat, browser;
before(async () => {
  webchat = await startWebchat(["--no-limits"]); // not about limits: limits.test.mjs is
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
  // bob's line is confirmed by the server's copy, and shown once
  const sent = bob.locator("#log li.chat", { hasText: "Yo alice!" });
  await sent.locator(".state", { hasText: "delivered" }).waitFor();
  assert.equal(await sent.count(), 1);

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

test("a message over 16 KiB is not sent, stays in the box, and the connection stays", async () => {
  const page = await browser.newPage();
  const id = await join(page, webchat.http);
  for (const size of [16 * 1024 + 1, 40000]) {
    const text = "x".repeat(size);
    await page.getByLabel("Message to everyone").fill(text);
    await page.getByLabel("Message to everyone").press("Enter");
    const notice = page.locator("#log li.notice", { hasText: `${size} bytes` });
    await notice.waitFor();
    assert.match(await notice.textContent(), /at most 16384 bytes/);
    assert.equal(await page.getByLabel("Message to everyone").inputValue(), text, "nothing lost");
  }
  // 16 KiB of quotes: within the message limit, but a frame over 32 KB once escaped
  const quotes = '"'.repeat(16 * 1024);
  await page.getByLabel("Message to everyone").fill(quotes);
  await page.getByLabel("Message to everyone").press("Enter");
  await page.locator("#log li.notice", { hasText: "once escaped" }).waitFor();
  assert.equal(await page.getByLabel("Message to everyone").inputValue(), quotes, "nothing lost");
  // the same connection: no close, no second welcome
  await page.getByLabel("Message to everyone").fill("still here");
  await page.getByLabel("Message to everyone").press("Enter");
  await page.locator("#log li.broadcast", { hasText: "still here" }).waitFor();
  assert.equal(await page.locator("#log li.welcome").count(), 1);
  assert.match(await page.locator("#log li.welcome").textContent(), new RegExp(id.replace(/[=+]/g, "\\$&")));
  await page.close();
});

test("a chat to someone who left is marked not delivered, with the server's reason", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await join(alice, webchat.http, "alice2");
  const bobId = await join(bob, webchat.http, "bob2");
  await alice.getByRole("button", { name: "Refresh list" }).click();
  const bobButton = alice.getByRole("button", { name: new RegExp(`^bob2 `) });
  await bobButton.click();
  await bob.close();
  await alice.getByLabel(/Message to/).fill("are you there?");
  await alice.getByLabel(/Message to/).press("Enter");
  const line = alice.locator("#log li.chat", { hasText: "are you there?" });
  await line.locator(".state", { hasText: "not delivered" }).waitFor();
  assert.match(await line.textContent(), new RegExp(`no connection ${bobId.replace(/[=+]/g, "\\$&")}`));
  assert.equal(await line.evaluate((li) => li.classList.contains("failed")), true);
  await alice.close();
});

test("when the person chosen leaves, they stay chosen and a message to them never becomes a broadcast", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await join(alice, webchat.http, "alice3");
  await join(bob, webchat.http, "bob3");
  await alice.getByRole("button", { name: "Refresh list" }).click();
  await alice.getByRole("button", { name: /^bob3 / }).click();
  await bob.close();
  // the next list (every 5 s) says bob left; alice is told, and bob stays chosen
  await alice.locator("#log li.notice", { hasText: "is no longer connected" }).waitFor({ timeout: 15000 });
  assert.match(await alice.locator("#target-name").textContent(), /^bob3 .* — left$/);
  await alice.getByLabel(/Message to/).fill("still there?");
  await alice.getByLabel(/Message to/).press("Enter");
  const line = alice.locator("#log li.chat", { hasText: "still there?" });
  await line.locator(".state", { hasText: "not delivered" }).waitFor();
  assert.equal(await alice.locator("#log li.broadcast", { hasText: "still there?" }).count(), 0);
  await alice.close();
});

test("disabled buttons look inert", async () => {
  const page = await browser.newPage();
  await page.goto(webchat.http);
  const style = (name) => page.getByRole("button", { name, exact: true }).evaluate((b) => {
    const s = getComputedStyle(b);
    return { background: s.backgroundColor, cursor: s.cursor, disabled: b.disabled };
  });
  const disconnect = await style("Disconnect");
  const refresh = await style("Refresh list");
  const connect = await style("Connect");
  assert.equal(disconnect.disabled, true);
  assert.equal(refresh.disabled, true);
  assert.equal(connect.disabled, false);
  assert.equal(disconnect.cursor, "not-allowed");
  assert.equal(refresh.background, disconnect.background, "every disabled button alike");
  assert.notEqual(refresh.background, "rgb(255, 255, 255)", "not the enabled secondary look");
  assert.notEqual(connect.background, disconnect.background);
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
  await page.close();
});

test("the page checks a display name before connecting", async () => {
  const page = await browser.newPage();
  await page.goto(webchat.http);
  await page.getByLabel("Display name").fill("a b");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  assert.equal(await page.getByLabel("Display name").evaluate((input) => input.validity.patternMismatch), true);
  assert.equal(await page.locator("#status").textContent(), "Not connected.", "no connection was tried");
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

test("a close by the server is explained, with its code", async () => {
  // A scripted server that closes as webchat-local does for a frame over 32 KB.
  const { WebSocketServer } = await import("ws");
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.on("listening", resolve));
  server.on("connection", (socket) => {
    socket.send(JSON.stringify({ type: "welcome", connectionId: "me=", message: "Welcome! - connected on me=" }));
    setTimeout(() => socket.close(1009, "Message too big"), 200);
  });
  try {
    const page = await browser.newPage();
    await page.goto(webchat.http + "?url=" + encodeURIComponent(`ws://127.0.0.1:${server.address().port}/`));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    const notice = page.locator("#log li.notice", { hasText: "closed (1009)" });
    await notice.waitFor();
    assert.match(await notice.textContent(), /over the server's size limit — Message too big/);
    await page.close();
  } finally {
    server.close();
  }
});
