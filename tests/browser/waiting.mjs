// A real browser in the waiting room: Debian's Chromium, driven by playwright-core.
//   node tests/browser/waiting.mjs BASE_URL SCREENSHOT.png
// Opens BASE_URL/sale/, expects the waiting page with a position, saves a screenshot, then
// waits (the page polls by itself) until it lands on the sale page. Prints one JSON line;
// exits non-zero with the reason on failure.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, shot] = process.argv.slice(2);
if (!base || !shot) {
  console.error("usage: node tests/browser/waiting.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "chromium-")), {
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await context.newPage();
  await page.goto(`${base}/sale/`);
  await page.waitForSelector("#position", { timeout: 15000 });
  const position = (await page.textContent("#position"))?.trim();
  await page.screenshot({ path: shot, fullPage: true });
  await page.waitForSelector("#sale-open", { timeout: 45000 });
  const heading = (await page.textContent("h1"))?.trim();
  await page.screenshot({ path: shot.replace(/\.png$/, "-admitted.png"), fullPage: true });
  console.log(JSON.stringify({ position, heading, url: page.url() }));
} catch (e) {
  console.error(`browser test failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await context.close();
}
