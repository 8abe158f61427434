// `npm run screenshot`: the README's screenshots, made from a real session (two pages chatting)
// against webchat-local. Writes docs/screenshot.png, and docs/screenshot-rooms.png (a room).
import { join, launchChromium, startWebchat } from "./support.mjs";

const webchat = await startWebchat(["--no-limits"]); // a session, not a test of the limits
const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const alice = await context.newPage();
  const bob = await context.newPage();
  await join(alice, webchat.http, "alice");
  await join(bob, webchat.http, "bob");
  await bob.getByLabel("Message to everyone").fill("Anybody home?");
  await bob.getByLabel("Message to everyone").press("Enter");
  await alice.locator("#log li.broadcast").waitFor();
  await alice.getByRole("button", { name: "Refresh list" }).click();
  await alice.getByRole("button", { name: /^bob / }).click();
  await alice.getByLabel(/Message to/).fill("Hi bob <b>this stays text</b>");
  await alice.getByLabel(/Message to/).press("Enter");
  await bob.locator("#log li.chat").waitFor();
  await alice.getByLabel(/Message to/).fill("…and a reply is on its way");
  await alice.screenshot({ path: new URL("../../docs/screenshot.png", import.meta.url).pathname });
  console.log("wrote docs/screenshot.png");
  await alice.getByLabel(/Message to/).fill("");
  // a room: both join rust, bob said something there before alice came, she catches up
  const joinRoom = async (page, room) => {
    await page.getByLabel("Room name").fill(room);
    await page.getByRole("button", { name: "Join", exact: true }).click();
    await page.locator(`.room-panel[data-room="${room}"] .room-state`, { hasText: `You are in ${room}.` })
      .waitFor({ state: "attached" });
  };
  const say = async (page, room, text) => {
    await page.locator(`#room-tabs [role=tab][data-room="${room}"]`).click();
    await page.getByLabel(`Message to room ${room}`).fill(text);
    await page.getByLabel(`Message to room ${room}`).press("Enter");
  };
  await joinRoom(bob, "rust");
  await say(bob, "rust", "anyone tried 1.94 on arm64?");
  await joinRoom(alice, "rust");
  await joinRoom(alice, "random");
  await say(alice, "rust", "yes: the images build in one stage");
  await say(bob, "rust", "nice, thanks");
  await alice.locator(`ol.room-log[data-room="rust"] li.broadcast`, { hasText: "nice, thanks" }).waitFor();
  await alice.locator(`#room-tabs [role=tab][data-room="rust"]`).click();
  await alice.screenshot({ path: new URL("../../docs/screenshot-rooms.png", import.meta.url).pathname });
  console.log("wrote docs/screenshot-rooms.png");
} finally {
  await browser.close();
  webchat.stop();
}
