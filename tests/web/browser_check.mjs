// Loads the status page in Debian's headless chromium (playwright-core, no browser download),
// waits for live values to appear and change, checks the status line and the chart, and
// saves screenshots. Usage: node browser_check.mjs <base-url> <artifact-dir>
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, outDir] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync"];
const result = { ok: false };

async function visit(locale, shot) {
  const profile = mkdtempSync(join(tmpdir(), "duet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true, args: FLAGS, locale, viewport: { width: 390, height: 844 }, // a phone
  });
  try {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(base + "/", { waitUntil: "domcontentloaded" });
    const num = page.locator('.value[data-key="sds/pm2_5"] .num');
    await num.waitFor({ timeout: 20000 });
    const numbers = () => page.locator(".value .num").allTextContents();
    const first = (await numbers()).join("|");
    const deadline = Date.now() + 20000;
    let later = first;
    while (later === first && Date.now() < deadline) {
      await page.waitForTimeout(250);
      later = (await numbers()).join("|");
    }
    const status = (await page.locator("#status-line").textContent()).trim();
    const points = await page.locator('.value[data-key="sds/pm2_5"] svg.spark polyline').getAttribute("points");
    const box = await page.locator('.value[data-key="sds/pm2_5"] svg.spark').boundingBox();
    const band = await page.locator('.value[data-key="sds/pm2_5"] .band').textContent();
    const stuck = await page.locator('.value[data-key="stuck/pm10"] .flags').textContent();
    await page.screenshot({ path: join(outDir, shot), fullPage: true });
    return { locale, first, later, changed: later !== first, status, band, stuck,
      chartPoints: points ? points.trim().split(/\s+/).length : 0,
      chartBox: box, lang: await page.getAttribute("html", "lang"), errors };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function tech() {
  const profile = mkdtempSync(join(tmpdir(), "duet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true, args: FLAGS, locale: "en-GB", viewport: { width: 1024, height: 900 },
  });
  try {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(base + "/tech", { waitUntil: "domcontentloaded" });
    await page.locator("#tech table").first().waitFor({ timeout: 20000 });
    await page.locator("#restart-buttons button").first().waitFor({ timeout: 10000 });
    const text = await page.locator("#tech").innerText();
    await page.screenshot({ path: join(outDir, "status-page-tech.png"), fullPage: true });
    return { text, errors };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

try {
  result.tech = await tech();
  result.en = await visit("en-GB", "status-page-en.png");
  result.nl = await visit("nl-BE", "status-page-nl.png");
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
