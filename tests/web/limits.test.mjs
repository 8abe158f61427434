// The per-client limits on the chat page, against webchat-local with small limits in headless
// Chromium: a message sent too fast is refused readably, Send waits out the server's retry time
// with a countdown and the message stays in the box; a broadcast the server never allows is
// explained and does not hold Send; a connection closed for its refused frames says why and
// does not come straight back; a connect past a user's connections is refused generically; a
// wait under a second counts down in tenths. The page's own frames (joins, lists, history) are
// paced: a reconnect in 20 rooms stays within the default budget, with a small one the joins
// refused are sent again until every room is in, and a refusal that may be about one of them is
// not taken for the person's message unless its copy never comes.
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
  // a wait under a second is counted in tenths, rounded up
  const countdown = whileHeld.countdown.match(/^You can send again in (0\.[1-9]|1) s$/);
  assert.ok(countdown, whileHeld.countdown);
  const shownMs = Number(countdown[1]) * 1000;
  assert.ok(shownMs >= retryAfterMs - 20 && shownMs < retryAfterMs + 100, `${whileHeld.countdown} for ${retryAfterMs} ms`);
  assert.equal(whileHeld.box, refused);
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
  assert.match(said.at(-1), /so it is being closed$/);

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
      message: "too many frames: this connection may send 10 a second, 20 at once; this one was dropped, send it again in 1.0 s; 100 of this connection's frames were refused within a minute, so it is being closed",
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

test("a wait is counted down in whole seconds, and its last second in tenths", async () => {
  const waits = [100, 2500]; // the server's retryAfterMs for each message, in turn
  const server = await scriptedServer((socket) => {
    socket.send(JSON.stringify({ type: "welcome", connectionId: "me=", message: "Welcome! - connected on me=" }));
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      if (frame.action === "list") {
        socket.send(JSON.stringify({ type: "connections", connections: [{ connectionId: "me=", name: null, connectedAt: "2026-12-06T08:00:00.000Z" }] }));
      }
      if (frame.action !== "broadcast") return;
      const wait = waits.shift();
      socket.send(JSON.stringify({
        type: "error", code: "rate_limited", retryAfterMs: wait,
        message: `too many frames: this connection may send 10 a second, 20 at once; this one was dropped, send it again in ${wait} ms`,
      }));
    });
  });
  const webchat = await webchatWith(["--no-limits"]); // serves the page
  const context = await browser.newContext();
  await context.clock.install();
  const page = await context.newPage();
  const countdown = page.locator("#send-wait");
  const box = page.getByLabel("Message to everyone");
  try {
    await page.goto(webchat.http + "?url=" + encodeURIComponent(server.url));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.getByRole("button", { name: "me= — you" }).waitFor(); // the page's list is answered
    await context.clock.pauseAt(Date.now() + 1000); // the page's time moves only as the test says

    await box.fill("quick");
    await box.press("Enter");
    await countdown.filter({ hasText: "You can send again in 0.1 s" }).waitFor(); // not "1 s"
    await context.clock.runFor(100);
    await countdown.waitFor({ state: "hidden" });

    assert.equal(await box.inputValue(), "quick", "back in the box");
    await box.press("Enter");
    await countdown.filter({ hasText: "You can send again in 3 s" }).waitFor();
    await context.clock.runFor(1000);
    assert.equal(await countdown.textContent(), "You can send again in 2 s");
    await context.clock.runFor(600);
    assert.equal(await countdown.textContent(), "You can send again in 0.9 s");
    await context.clock.runFor(800);
    assert.equal(await countdown.textContent(), "You can send again in 0.1 s");
    await context.clock.runFor(100);
    await countdown.waitFor({ state: "hidden" });
    assert.equal(await sendEnabled(page), true);
  } finally {
    await context.close();
    server.close();
  }
});

test("a refusal while the page's own list is unanswered is the person's only if their copy never comes", async () => {
  // A scripted server that leaves the page's list unanswered when told to, and answers each
  // message with a refusal, then either the message's copy (the list was refused) or the held
  // list's answer (the message was).
  const lists = [];       // the list frames it got
  let holdList = true;    // leave the next list unanswered
  let arrived = () => {};
  const me = { connectionId: "me=", name: null, connectedAt: "2026-12-06T08:00:00.000Z" };
  const server = await scriptedServer((socket) => {
    let held = null;
    socket.send(JSON.stringify({ type: "welcome", connectionId: "me=", message: "Welcome! - connected on me=" }));
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      const answerList = () => socket.send(JSON.stringify({ type: "connections", connections: [me] }));
      if (frame.action === "list") {
        lists.push(frame);
        if (holdList) { holdList = false; held = answerList; arrived(); } else answerList();
        return;
      }
      socket.send(JSON.stringify({
        type: "error", code: "rate_limited", retryAfterMs: 200,
        message: "too many frames: this connection may send 10 a second, 20 at once; this one was dropped, send it again in 200 ms",
      }));
      if (frame.message === "the list was refused") {
        socket.send(JSON.stringify({ type: "broadcast", from: "me=", user: null, name: null, message: frame.message, sentAt: new Date().toISOString() }));
      } else {
        held();
      }
    });
  });
  const webchat = await webchatWith(["--no-limits"]); // serves the page
  const page = await browser.newPage();
  const box = page.getByLabel("Message to everyone");
  try {
    await page.goto(webchat.http + "?url=" + encodeURIComponent(server.url));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.locator("#log li.welcome").waitFor();
    assert.equal(lists.length, 1, "the page's list is in flight, unanswered");

    // the refusal is about the list: the message's copy comes, nothing is said, the list goes again
    await box.fill("the list was refused");
    await box.press("Enter");
    await page.locator("#log li.broadcast", { hasText: "the list was refused" }).waitFor();
    await page.getByRole("button", { name: "me= — you" }).waitFor(); // the list asked again, answered
    assert.equal(lists.length, 2);
    assert.equal(await page.locator("#log li.notice").count(), 0, "no notice: the person sent nothing refused");
    assert.equal(await box.inputValue(), "");

    // the refusal is about the message: the held list is answered, the message was not sent
    holdList = true;
    const listHeld = new Promise((resolve) => { arrived = resolve; });
    await page.getByRole("button", { name: "Refresh list" }).click();
    await listHeld;
    await page.waitForFunction(() => !document.getElementById("send").disabled); // the first wait is over
    await box.fill("the message was refused");
    await box.press("Enter");
    const notice = page.locator("#log li.notice", { hasText: "“the message was refused” was not sent" });
    await notice.waitFor();
    assert.match(await notice.textContent(), /sending too fast:.*\(it is back in the box\)/);
    assert.equal(await box.inputValue(), "the message was refused");
    assert.equal(lists.length, 3, "the list was answered: not sent again");
  } finally {
    await page.close();
    server.close();
  }
});

/** Every websocket `page` opens, in order: the frames it sent and received (parsed), whether it
 *  closed; and `until(check)`, which resolves once `check()` holds, checked at every frame. */
function watchSockets(page) {
  const sockets = [];
  const waiting = new Set();
  const recheck = () => {
    for (const waiter of waiting) if (waiter.check()) { waiting.delete(waiter); waiter.resolve(); }
  };
  page.on("websocket", (socket) => {
    const watched = { sent: [], received: [], closed: false };
    sockets.push(watched);
    socket.on("framesent", ({ payload }) => watched.sent.push(JSON.parse(String(payload))));
    socket.on("framereceived", ({ payload }) => { watched.received.push(JSON.parse(String(payload))); recheck(); });
    socket.on("close", () => { watched.closed = true; });
  });
  sockets.until = (check) => new Promise((resolve) => {
    if (check()) resolve(); else waiting.add({ check, resolve });
  });
  return sockets;
}

/** Types each room of `names` in the Join form, one after the other, not waiting for answers. */
async function typeJoins(page, names) {
  for (const name of names) {
    await page.getByLabel("Room name").fill(name);
    await page.getByRole("button", { name: "Join", exact: true }).click();
  }
}

/** Resolves once the page shows itself in every room of `names` (none left "Joining…"). */
async function allJoined(page, names, timeout = 30000) {
  await page.waitForFunction((names) => names.every((name) =>
    document.querySelector(`.room-panel[data-room="${name}"] .room-state`)?.textContent === `You are in ${name}.`),
  names, { timeout });
}

/** Whether the countdown beside Send ever shows from now on: window.sendWaited (not
 *  window.held, which would replace the page's own held()). */
async function watchHeld(page) {
  await page.evaluate(() => {
    const wait = document.getElementById("send-wait");
    window.sendWaited = !wait.hidden;
    new MutationObserver(() => { if (!wait.hidden) window.sendWaited = true; })
      .observe(wait, { attributes: true, attributeFilter: ["hidden"] });
  });
}

/** Drops the page's connection from the server's side (DeleteConnection on the management API)
 *  and resolves once the page is back (its second welcome). */
async function dropAndReconnect(page, webchat, connectionId) {
  const deleted = await fetch(`${webchat.http}@connections/${encodeURIComponent(connectionId)}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
  await page.locator("#log li.welcome").nth(1).waitFor({ state: "attached", timeout: 10000 });
}

test("a page in 20 rooms joins them all again after a drop, within the server's default budget", { timeout: 90000 }, async () => {
  // the default limits: 10 frames a second, bursts of 20; 100 refused in a minute close
  const webchat = await webchatWith([]);
  const page = await browser.newPage();
  const sockets = watchSockets(page);
  const first = await join(page, webchat.http, "busy");
  const names = Array.from({ length: 20 }, (_, i) => `busy${i + 1}`); // the most a connection may be in
  await typeJoins(page, names);
  await allJoined(page, names);
  await watchHeld(page);

  // back, the page asks for the list, joins 20 rooms and asks each for its members: 41 frames
  await dropAndReconnect(page, webchat, first);
  await allJoined(page, names);
  const again = sockets[1];
  await sockets.until(() => names.every((name) => again.received.some((frame) => frame.type === "connections" && frame.room === name)));

  assert.equal(sockets.length, 2, "one reconnect, and no close after it");
  assert.equal(again.closed, false);
  const refusals = sockets.flatMap((socket) => socket.received).filter((frame) => frame.code === "rate_limited");
  assert.deepEqual(refusals, [], "nothing the page sent by itself was over the budget");
  const joins = again.sent.filter((frame) => frame.action === "join").map((frame) => frame.room);
  assert.deepEqual(joins.sort(), [...names].sort(), "each room joined once");
  assert.equal(await page.locator("li.notice", { hasText: "sending too fast" }).count(), 0);
  assert.equal(await page.locator("li.notice", { hasText: "Closed by the server" }).count(), 0);
  assert.equal(await page.evaluate(() => window.sendWaited), false, "Send never waited");
  await page.close();
});

test("with a small budget, the joins refused are sent again until every room is in", { timeout: 120000 }, async () => {
  // 7 frames at once on reconnect (the list and 6 joins) where 4 pass: 3 joins are refused
  const webchat = await webchatWith(["--frame-rate", "2", "--frame-burst", "4"]);
  const page = await browser.newPage();
  const sockets = watchSockets(page);
  const first = await join(page, webchat.http, "patient");
  await watchHeld(page);
  const names = ["p1", "p2", "p3", "p4", "p5", "p6"];
  await typeJoins(page, names);
  await allJoined(page, names, 60000);

  await dropAndReconnect(page, webchat, first);
  await allJoined(page, names, 60000);
  const again = sockets[1];
  await sockets.until(() => names.every((name) => again.received.some((frame) => frame.type === "connections" && frame.room === name)));

  const refusals = again.received.filter((frame) => frame.code === "rate_limited");
  const joins = again.sent.filter((frame) => frame.action === "join").map((frame) => frame.room);
  assert.ok(refusals.length > 0, "the reconnect was over the budget");
  assert.ok(joins.length > names.length, `a refused join was sent again: ${JSON.stringify(joins)}`);
  assert.deepEqual([...new Set(joins)].sort(), names);
  // the page slowed down instead of being closed, and said nothing: the person sent nothing
  assert.equal(sockets.length, 2);
  assert.equal(again.closed, false);
  const closing = sockets.flatMap((socket) => socket.received).filter((frame) => /being closed/.test(frame.message ?? ""));
  assert.deepEqual(closing, []);
  assert.equal(await page.locator("li.notice", { hasText: "sending too fast" }).count(), 0);
  assert.equal(await page.evaluate(() => window.sendWaited), false, "Send never waited");
  await page.close();
});
