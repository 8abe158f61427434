// Starts webchat-local and Debian's Chromium (never a downloaded browser) for the page tests.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join as joinPath } from "node:path";
import { chromium } from "playwright-core";

const root = new URL("../..", import.meta.url).pathname;

/** webchat-local on a free port, with more `args`; resolves to { url, http, stop }. */
export async function startWebchat(args = []) {
  const targetDir = process.env.CARGO_TARGET_DIR || joinPath(root, "target");
  const binary = process.env.WEBCHAT_LOCAL || joinPath(targetDir, "release", "webchat-local");
  const child = spawn(binary, ["--listen", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "ignore"] });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`webchat-local exited (${code}); build it with cargo build --release`)));
    lines.on("line", (line) => {
      const match = line.match(/ws:\/\/[0-9.:]+/);
      if (match) resolve(match[0]);
    });
  });
  return { url, http: url.replace("ws://", "http://") + "/", stop: () => child.kill() };
}

export async function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true, // Playwright gives it a fresh, empty profile
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Opens the page and connects with `name`; resolves once welcomed, to the connection id. */
export async function join(page, http, name) {
  await page.goto(http);
  if (name !== undefined) await page.getByLabel("Display name").fill(name);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  const welcome = page.locator("#log li.welcome").first();
  await welcome.waitFor();
  const text = await welcome.textContent();
  return text.match(/connected on (\S+)/)[1];
}
