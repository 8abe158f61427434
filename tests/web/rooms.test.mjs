// Rooms on the chat page, against webchat-local in headless Chromium: each room's messages stay
// in its own view, a page that lost its connection (or was reloaded) shows what it missed once
// it is back, scrolling up loads a room's older messages, presence shows who comes and goes, and
// a bad room name or a 21st room is explained. Each test uses rooms of its own: one server serves
// them all.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join, launchChromium, startWebchat } from "./support.mjs";

let webchat, browser;
before(async () => {
  // limits off: a room of 60 messages is filled at once, and a page joins 21 rooms
  webchat = await startWebchat(["--no-limits"]);
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  webchat?.stop();
});

const tab = (page, room) => page.locator(`#room-tabs [role=tab][data-room="${room}"]`);
const view = (page, room) => page.locator(`ol.room-log[data-room="${room}"]`);
/** A room's messages as its view shows them, top to bottom: { seq, text }. */
const messages = (page, room) => view(page, room).locator("li.broadcast")
  .evaluateAll((items) => items.map((item) => ({ seq: Number(item.dataset.seq), text: item.lastChild.textContent })));
/** Every line of every view of a page: everyone's and each room's. */
const everything = (page) => page.locator("#log li, ol.room-log li").allTextContents();

/** Joins `room` with the page's form; resolves once the server said joined. */
async function joinRoom(page, room) {
  await page.getByLabel("Room name").fill(room);
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator(`.room-panel[data-room="${room}"] .room-state`, { hasText: `You are in ${room}.` })
    .waitFor({ state: "attached" });
}

/** Shows `room` and sends `text` in it. */
async function say(page, room, text) {
  await tab(page, room).click();
  const box = page.getByLabel(`Message to room ${room}`);
  await box.fill(text);
  await box.press("Enter");
}

function assertNumbered(shown) {
  for (let i = 1; i < shown.length; i += 1) {
    assert.equal(shown[i].seq, shown[i - 1].seq + 1, `one more each, none twice: ${JSON.stringify(shown)}`);
  }
}

/** A plain WebSocket client of webchat-local (the ws package), for filling a room fast. */
async function rawClient(url) {
  const { WebSocket } = await import("ws");
  const socket = new WebSocket(url);
  const frames = [];
  let wake = () => {};
  socket.on("message", (data) => { frames.push(JSON.parse(String(data))); wake(); });
  await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
  return {
    send: (frame) => socket.send(JSON.stringify(frame)),
    until: async (seen) => { while (!frames.some(seen)) await new Promise((resolve) => { wake = resolve; }); },
    close: () => socket.close(),
  };
}

test("two people in two rooms: each room's messages reach its members only, a shared room both", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await join(alice, webchat.http, "alice");
  await join(bob, webchat.http, "bob");
  await joinRoom(alice, "red");
  await joinRoom(alice, "both");
  await joinRoom(bob, "blue");
  await joinRoom(bob, "both");

  await say(alice, "red", "red: alice here");
  await say(bob, "blue", "blue: bob here");
  await say(alice, "both", "both: alice here");
  await say(bob, "both", "both: bob here");
  // a view not shown is hidden: its lines are attached, not visible
  await view(alice, "red").locator("li.broadcast", { hasText: "red: alice here" }).waitFor({ state: "attached" });
  await view(bob, "blue").locator("li.broadcast", { hasText: "blue: bob here" }).waitFor({ state: "attached" });
  for (const page of [alice, bob]) {
    await view(page, "both").locator("li.broadcast", { hasText: "both: bob here" }).waitFor({ state: "attached" });
  }

  assert.deepEqual((await messages(alice, "red")).map((m) => m.text), ["red: alice here"]);
  assert.deepEqual((await messages(bob, "blue")).map((m) => m.text), ["blue: bob here"]);
  for (const page of [alice, bob]) {
    assert.deepEqual((await messages(page, "both")).map((m) => m.text), ["both: alice here", "both: bob here"]);
    // a room's message is not in everyone's view
    const everyone = await page.locator("#log li").allTextContents();
    assert.ok(!everyone.some((line) => /(red|blue|both): /.test(line)), JSON.stringify(everyone));
  }
  // neither page has the other's room, nor its messages in any view
  assert.equal(await tab(alice, "blue").count(), 0);
  assert.equal(await tab(bob, "red").count(), 0);
  assert.ok(!(await everything(alice)).some((line) => line.includes("blue: bob here")));
  assert.ok(!(await everything(bob)).some((line) => line.includes("red: alice here")));
  await alice.close();
  await bob.close();
});

test("a page that lost its connection shows what it missed in a room, in order, once each", async () => {
  const alice = await browser.newPage();
  // bob's timers run on Playwright's clock: paused, his page cannot reconnect before the test says
  const bobContext = await browser.newContext();
  await bobContext.clock.install();
  const bob = await bobContext.newPage();
  const joins = []; // the join frames bob's page sends
  bob.on("websocket", (socket) => socket.on("framesent", ({ payload }) => {
    const frame = JSON.parse(String(payload));
    if (frame.action === "join") joins.push(frame);
  }));
  await join(alice, webchat.http, "alice2");
  const bobId = await join(bob, webchat.http, "bob2");
  await joinRoom(alice, "den");
  await joinRoom(bob, "den");
  await say(alice, "den", "seen live");
  await view(bob, "den").locator("li.broadcast", { hasText: "seen live" }).waitFor();

  await bobContext.clock.pauseAt(Date.now() + 1000);
  // the server drops bob's connection (DeleteConnection on the management API)
  const deleted = await fetch(`${webchat.http}@connections/${encodeURIComponent(bobId)}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
  await bob.locator("#status", { hasText: "Reconnecting" }).waitFor();
  for (const text of ["missed 1", "missed 2", "missed 3"]) await say(alice, "den", text);
  await view(alice, "den").locator("li.broadcast", { hasText: "missed 3" }).waitFor();
  assert.equal(await view(bob, "den").locator("li.broadcast", { hasText: "missed" }).count(), 0, "bob was away");

  await bobContext.clock.resume(); // the page's reconnection timer runs
  await bob.locator("#log li.welcome").nth(1).waitFor({ state: "attached", timeout: 10000 });
  await view(bob, "den").locator("li.broadcast", { hasText: "missed 3" }).waitFor();
  const shown = await messages(bob, "den");
  assert.deepEqual(shown.map((m) => m.text), ["seen live", "missed 1", "missed 2", "missed 3"]);
  assertNumbered(shown);
  // a catch-up: the room joined again since the last seq seen
  assert.deepEqual(joins, [{ action: "join", room: "den" }, { action: "join", room: "den", since: shown[0].seq }]);
  await alice.close();
  await bobContext.close();
});

test("a reloaded page joins its rooms again and shows what it missed", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await join(alice, webchat.http, "alice3");
  await join(bob, webchat.http, "bob3");
  await joinRoom(alice, "attic");
  await joinRoom(bob, "attic");
  await say(alice, "attic", "before the reload");
  await view(bob, "attic").locator("li.broadcast", { hasText: "before the reload" }).waitFor();

  await bob.reload(); // the connection ends; the rooms and their last seq stay in sessionStorage
  await bob.locator("#status", { hasText: "Not connected" }).waitFor();
  for (const text of ["while away 1", "while away 2"]) await say(alice, "attic", text);
  await view(alice, "attic").locator("li.broadcast", { hasText: "while away 2" }).waitFor();

  await join(bob, webchat.http, "bob3");
  await view(bob, "attic").locator("li.broadcast", { hasText: "while away 2" }).waitFor({ state: "attached" });
  assert.match(await tab(bob, "attic").textContent(), /2 new/, "what was missed counts as unread");
  // shown, the room loads what came before (its view is not full)
  await tab(bob, "attic").click();
  await view(bob, "attic").locator("li.broadcast", { hasText: "before the reload" }).waitFor();
  const shown = await messages(bob, "attic");
  assert.deepEqual(shown.map((m) => m.text), ["before the reload", "while away 1", "while away 2"]);
  assertNumbered(shown);
  await alice.close();
  await bob.close();
});

test("scrolling up in a room of 60 messages loads the older ones, each once", async () => {
  const filler = await rawClient(`${webchat.url}/?name=filler`);
  filler.send({ action: "join", room: "archive" });
  await filler.until((frame) => frame.type === "joined" && frame.room === "archive");
  const texts = Array.from({ length: 60 }, (_, i) => `m${String(i + 1).padStart(2, "0")}`);
  for (const message of texts) filler.send({ action: "broadcast", room: "archive", message });
  await filler.until((frame) => frame.type === "broadcast" && frame.message === "m60");

  const page = await browser.newPage();
  await join(page, webchat.http, "reader");
  await joinRoom(page, "archive");
  const archive = view(page, "archive");
  await archive.locator("li.broadcast", { hasText: "m60" }).waitFor();
  assert.equal(await archive.locator("li.broadcast").count(), 50, "the newest 50 first");
  assert.equal(await archive.locator("li.broadcast", { hasText: "m10" }).count(), 0);

  await archive.evaluate((list) => { list.scrollTop = 0; });
  await archive.locator("li.broadcast", { hasText: "m01" }).waitFor({ state: "attached" });
  const shown = await messages(page, "archive");
  assert.deepEqual(shown.map((m) => m.text), texts);
  assert.deepEqual(shown.map((m) => m.seq), texts.map((_, i) => i + 1));
  await archive.locator("li.more").waitFor({ state: "hidden" }); // nothing older
  filler.close();
  await page.close();
});

test("a room shows who joins and leaves, and lists its members", async () => {
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await join(alice, webchat.http, "alice5");
  await join(bob, webchat.http, "bob5");
  await joinRoom(alice, "lobby");
  await alice.locator("#member-list li", { hasText: "alice5" }).waitFor();

  await joinRoom(bob, "lobby");
  await view(alice, "lobby").locator("li.presence", { hasText: "bob5 joined" }).waitFor();
  await alice.locator("#member-list li", { hasText: "bob5" }).waitFor();
  assert.equal(await alice.locator("#members-note").textContent(), "2 here");
  await bob.locator("#member-list li", { hasText: "alice5" }).waitFor();

  await bob.getByRole("button", { name: "Leave lobby", exact: true }).click();
  await tab(bob, "lobby").waitFor({ state: "detached" });
  await view(alice, "lobby").locator("li.presence", { hasText: "bob5 left" }).waitFor();
  await alice.locator("#member-list li", { hasText: "bob5" }).waitFor({ state: "detached" });
  await alice.close();
  await bob.close();
});

test("a bad room name is explained before joining, and a 21st room is refused readably", async () => {
  const page = await browser.newPage();
  await join(page, webchat.http, "collector");
  await page.getByLabel("Room name").fill("no spaces <b>here</b>");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator("#room-hint.error", { hasText: "1 to 64 letters, digits, _ . or -" }).waitFor();
  assert.equal(await page.getByLabel("Room name").getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#room-tabs [role=tab]").count(), 1, "only everyone's");
  assert.equal(await page.locator("#room-hint b").count(), 0, "text, not markup");

  for (let i = 1; i <= 20; i += 1) await joinRoom(page, `r${i}`);
  await page.getByLabel("Room name").fill("r21");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator("#room-hint.error", { hasText: "Could not join r21" }).waitFor();
  await tab(page, "r21").waitFor({ state: "detached" });
  assert.equal(await page.locator("#room-tabs [role=tab]").count(), 21);
  const notice = page.locator("#log li.notice", { hasText: "could not join r21" });
  await notice.waitFor();
  assert.match(await notice.textContent(), /leave one, then join r21/);
  await page.close();
});
