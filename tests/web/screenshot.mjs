// `npm run screenshot`: the README's screenshot, made from a real session (two pages chatting)
// against webchat-local. Writes docs/screenshot.png.
import { join, launchChromium, startWebchat } from "./support.mjs";

const webchat = await startWebchat();
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
} finally {
  await browser.close();
  webchat.stop();
}
