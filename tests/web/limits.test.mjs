// The per-client limits on the chat page, against webchat-local with small limits in headless
// Chromium: a message sent too fast is refused readably, Send waits out the server's retry time
// with a countdown and the message stays in the box; a broadcast the server never allows is
// explained and does not hold Send; a connection closed for its refused frames says why and
// does not come straight back; a connect past a user's connections is refused generically.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join, launchChromium, startWebchat } from "./support.mjs";

let browser;
const servers = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  for (const server of servers) server.stop();
});

/** webchat-local with `args`, stopped after the tests. */
async function webchatWith(args) {
  const server = await startWebchat(args);
  servers.push(server);
  return server;
}

/** The page's Send control, and whether it can be pressed now. */
const sendEnabled = (page) => page.evaluate(() => !document.getElementById("send").disabled);

/** Sends `quick 1.`, `quick 2.`, … in `box`, each answered (its copy in `view`, or a refusal)
 *  before the next, until one is refused; resolves to its text. */
async function sendUntilRefused(page, box, view) {
  for (let i = 1; i <= 10; i += 1) {
    const text = `quick ${i}.`;
    await box.fill(text);
    await box.press("Enter");
    const notice = view.locator("li.notice", { hasText: `“${text}” was not sent` });
    await view.locator("li.broadcast", { hasText: text }).or(notice).waitFor();
    if (await notice.count()) return text;
  }
  throw new Error("the server refused none of 10 messages");
}

/** A scripted server (the ws package) calling `onConnection(socket)` for each connection. */
async function scriptedServer(onConnection) {
  const { WebSocketServer } = await import("ws");
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.on("listening", resolve));
  server.on("connection", onConnection);
  return { url: `ws://127.0.0.1:${server.address().port}/`, close: () => server.close() };
}

test("a message sent too fast is refused readably, stays in the box, and sends once the wait is over", async () => {
  const webchat = await webchatWith(["--frame-rate", "1", "--frame-burst", "2"]);
  const page = await browser.newPage();
  const refusals = []; // the rate_limited frames the page got
  const sent = [];     // every frame the page sent
  page.on("websocket", (socket) => {
    socket.on("framereceived", ({ payload }) => {
      const frame = JSON.parse(String(payload));
      if (frame.code === "rate_limited") refusals.push(frame);
    });
    socket.on("framesent", ({ payload }) => sent.push(JSON.parse(String(payload))));
  });
  await join(page, webchat.http, "hasty");
  await page.getByRole("button", { name: / — you$/ }).waitFor(); // the page's own list is answered
  // the moments Send is held and let go, as the page sees them (no race with a short wait)
  await page.evaluate(() => {
    const send = document.getElementById("send");
    const wait = document.getElementById("send-wait");
    const box = document.getElementById("message");
    window.heldAt = null;
    new MutationObserver(() => {
      if (send.disabled && window.heldAt === null) {
        window.heldAt = performance.now();
        window.whileHeld = { countdown: wait.hidden ? null : wait.textContent, box: box.value };
      } else if (!send.disabled && window.heldAt !== null && window.freedAfter === undefined) {
        window.freedAfter = performance.now() - window.heldAt;
      }
    }).observe(send, { attributes: true, attributeFilter: ["disabled"] });
  });

  const box = page.getByLabel("Message to everyone");
  const refused = await sendUntilRefused(page, box, page.locator("#log"));
  assert.equal(refusals.length, 1);
  const { retryAfterMs } = refusals[0];
  assert.ok(retryAfterMs > 0 && retryAfterMs <= 1000, String(retryAfterMs));

  const notice = page.locator("#log li.notice", { hasText: `“${refused}” was not sent` });
  assert.match(await notice.textContent(), /sending too fast:.*\(it is back in the box\) — too many frames: .*send it again in/);
  assert.equal(await page.locator("#log li.broadcast", { hasText: refused }).count(), 0);
  // held for the server's wait, with a countdown, the refused message in the box
  await page.waitForFunction(() => window.freedAfter !== undefined, null, { timeout: 5000 });
  const { whileHeld, freedAfter } = await page.evaluate(() => ({ whileHeld: window.whileHeld, freedAfter: window.freedAfter }));
  assert.deepEqual(whileHeld, { countdown: "You can send again in 1 s", box: refused });
  assert.ok(freedAfter >= retryAfterMs - 20 && freedAfter < retryAfterMs + 500, `held ${freedAfter} ms of ${retryAfterMs}`);
  assert.equal(await page.locator("#send-wait").isHidden(), true);
  assert.equal(await box.inputValue(), refused, "nothing lost");
  assert.equal(sent.filter((frame) => frame.message === refused).length, 1, "not sent again by itself");

  // the person sends it again: it goes, once
  assert.equal(await sendEnabled(page), true);
  await box.press("Enter");
  await page.locator("#log li.broadcast", { hasText: refused }).waitFor();
  assert.equal(await box.inputValue(), "");
  assert.equal(await page.locator("#log li.broadcast", { hasText: refused }).count(), 1);
  assert.equal(refusals.length, 1);
  await page.close();
});

test("a message refused in a room is said in the room's view, and goes back in the box there", async () => {
  // a burst of 5: the page's list, the join, its history and its member list leave one
  const webchat = await webchatWith(["--frame-rate", "1", "--frame-burst", "5"]);
  const page = await browser.newPage();
  await join(page, webchat.http, "roomy");
  await page.getByLabel("Room name").fill("den");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator('.room-panel[data-room="den"] .room-state', { hasText: "You are in den." }).waitFor();
  await page.locator("#member-list li", { hasText: "roomy" }).waitFor(); // its list is answered
  const den = page.locator('ol.room-log[data-room="den"]');
  const box = page.getByLabel("Message to room den");
  const refused = await sendUntilRefused(page, box, den);
  assert.match(await den.locator("li.notice", { hasText: refused }).textContent(), /sending too fast:.*\(it is back in the box\)/);
  assert.equal(await page.locator("#log li.notice").count(), 0, "not in everyone's view");
  assert.equal(await box.inputValue(), refused);
  await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 5000 });
  await box.press("Enter");
  await den.locator("li.broadcast", { hasText: refused }).waitFor();
  await page.close();
});

test("a broadcast the server never allows is explained, stays in the box, and does not hold Send", async () => {
  const webchat = await webchatWith(["--no-everyone-broadcast"]);
  const page = await browser.newPage();
  await join(page, webchat.http, "loud");
  const box = page.getByLabel("Message to everyone");
  await box.fill("hello everyone");
  await box.press("Enter");
  const notice = page.locator("#log li.notice", { hasText: "“hello everyone” was not sent" });
  await notice.waitFor();
  assert.match(await notice.textContent(), /not allowed:.*\(it is back in the box\) — broadcasting to everyone is turned off here/);
  assert.equal(await box.inputValue(), "hello everyone");
  assert.equal(await sendEnabled(page), true, "nothing to wait for");
  assert.equal(await page.locator("#send-wait").isHidden(), true);

  // as the notice says: join a room, and the message in the box goes there
  await page.getByLabel("Room name").fill("lobby");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator('.room-panel[data-room="lobby"] .room-state', { hasText: "You are in lobby." }).waitFor();
  await page.getByLabel("Message to room lobby").press("Enter");
  await page.locator('ol.room-log[data-room="lobby"] li.broadcast', { hasText: "hello everyone" }).waitFor();
  assert.equal(await page.getByLabel("Message to room lobby").inputValue(), "");
  await page.close();
});

test("a connection closed for its refused frames says why, and does not come straight back", async () => {
  const webchat = await webchatWith(["--frame-rate", "1", "--frame-burst", "1"]);
  // the page's timers run on Playwright's clock, so the wait before reconnecting can be skipped
  const context = await browser.newContext();
  await context.clock.install();
  const page = await context.newPage();
  let connects = 0;
  page.on("websocket", () => { connects += 1; });
  await join(page, webchat.http, "flood");
  // a script in the page floods the server (the page's own sending waits out each refusal)
  await page.evaluate(() => {
    for (let i = 0; i < 150; i += 1) socket.send(JSON.stringify({ action: "list" }));
  });
  const closed = page.locator("#log li.notice", { hasText: "Closed by the server: too many refused frames" });
  await closed.waitFor();
  assert.match(await closed.textContent(), /closed \(1008\):/);
  await page.locator("#status", { hasText: "Closed by the server: too many refused frames. Reconnecting in 30 s" }).waitFor();
  // the flood is said once while Send waits, not 100 times, and last that the server closes
  const said = await page.locator("#log li.notice", { hasText: "sending too fast:" }).allTextContents();
  assert.ok(said.length >= 2 && said.length < 10, JSON.stringify(said));
  assert.match(said.at(-1), /so this connection is being closed$/);

  await context.clock.pauseAt(Date.now() + 1000);
  await context.clock.runFor(27000); // 28 s after the close
  assert.equal(connects, 1, "not back before 30 s");
  assert.equal(await page.locator("#log li.welcome").count(), 1);
  await context.clock.runFor(3000);
  await page.locator("#log li.welcome").nth(1).waitFor({ state: "attached" });
  assert.equal(connects, 2);
  await context.close();
});

test("a close announced by the last refusal waits too, where the gateway closes with 1000", async () => {
  // API Gateway's DeleteConnection always closes with 1000: the refusal before it says why
  let connects = 0;
  const server = await scriptedServer((socket) => {
    connects += 1;
    socket.send(JSON.stringify({ type: "welcome", connectionId: "me=", message: "Welcome! - connected on me=" }));
    socket.send(JSON.stringify({
      type: "error", code: "rate_limited", retryAfterMs: 1000,
      message: "too many frames: this connection may send 10 a second, 20 at once; this one was dropped, send it again in 1.0 s; frames kept being refused (100 in a minute), so this connection is being closed",
    }));
    setTimeout(() => socket.close(1000), 100);
  });
  const webchat = await webchatWith(["--no-limits"]); // serves the page
  const context = await browser.newContext();
  await context.clock.install();
  const page = await context.newPage();
  try {
    await page.goto(webchat.http + "?url=" + encodeURIComponent(server.url));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.locator("#log li.notice", { hasText: "Closed by the server: too many refused frames" }).waitFor();
    await page.locator("#status", { hasText: "Reconnecting in 30 s" }).waitFor();
    await context.clock.pauseAt(Date.now() + 1000);
    await context.clock.runFor(27000);
    assert.equal(connects, 1, "not back before 30 s");
    // Connect does not wait
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.locator("#log li.welcome").nth(1).waitFor({ state: "attached" });
    assert.equal(connects, 2);
  } finally {
    await context.close();
    server.close();
  }
});

test("a connect past a person's connections is refused, and the page says it may be that", async () => {
  const webchat = await webchatWith(["--dev-issuer", "--connections-per-user", "1"]);
  const signIn = async (page) => {
    await page.goto(webchat.http);
    await page.locator("#status", { hasText: "signs you in by name" }).waitFor();
    await page.getByLabel("Display name").fill("Ada");
    await page.getByRole("button", { name: "Connect", exact: true }).click();
  };
  const first = await browser.newPage();
  await signIn(first);
  await first.locator("#status", { hasText: "signed in as" }).waitFor();
  const second = await browser.newPage();
  await signIn(second);
  // a browser cannot read the 429's body: the page names the likely causes
  await second.locator("#log li.notice", { hasText: "too many connections open" }).waitFor();
  assert.equal(await second.locator("#status").textContent(), "Could not connect.");
  await first.close();
  await second.close();
});
