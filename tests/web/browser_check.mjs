// Loads the host and technician pages in Debian's headless chromium (playwright-core, no
// browser download), measures what a person would see, and saves screenshots.
// Usage: node browser_check.mjs <base-url> <screenshot-dir>; prints one JSON line.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, outDir] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync", "--font-render-hinting=none"];
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };
const result = { ok: false };

async function withPage(locale, viewport, fn) {
  const profile = mkdtempSync(join(tmpdir(), "duet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true, args: FLAGS, locale, viewport, deviceScaleFactor: 1,
  });
  try {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    const out = await fn(page);
    out.errors = errors;
    return out;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// Elements whose right edge is past the viewport (what makes a phone scroll sideways).
function overflow() {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 0.5) out.push(el.tagName.toLowerCase() + "." + el.className + " → " + Math.round(r.right));
  }
  return { scrollWidth: document.documentElement.scrollWidth, overflow: out.slice(0, 10) };
}

async function hostFacts(page) {
  return page.evaluate(() => {
    const text = (sel) => (document.querySelector(sel)?.textContent || "").replace(/\s+/g, " ").trim();
    const dead = document.querySelector('.sensor[data-state="down"]');
    const num = dead?.querySelector(".num");
    return {
      lang: document.documentElement.lang,
      site: text("#site-name"),
      verdicts: document.querySelectorAll("#verdict").length,
      verdictState: document.querySelector("#verdict")?.dataset.state,
      verdictBand: text("#verdict .verdict-band"),
      legendBands: document.querySelectorAll("ol.legend-bands li").length,
      scaleBands: document.querySelectorAll("ol.scale li").length,
      status: text("#status-line"),
      sensorNames: [...document.querySelectorAll(".sensor h2")].map((h) => h.textContent.trim()),
      dead: dead ? {
        state: dead.dataset.state,
        bands: dead.querySelectorAll(".band").length,
        numColour: num ? getComputedStyle(num).color : null,
        text: dead.textContent.replace(/\s+/g, " ").trim(),
      } : null,
    };
  });
}

async function waitForHost(page) {
  await page.locator('#verdict[data-state="final"]').waitFor({ timeout: 20000 });
  await page.locator('.sensor[data-state="down"]').waitFor({ timeout: 20000 });
}

async function phoneNl(page) {
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await waitForHost(page);
  const numbers = () => page.locator('.sensor[data-sensor="sds"] .num').allTextContents();
  const first = (await numbers()).join("|");
  let later = first;
  const deadline = Date.now() + 20000;
  while (later === first && Date.now() < deadline) {
    await page.waitForTimeout(300);
    later = (await numbers()).join("|");
  }
  const facts = await hostFacts(page);
  await page.screenshot({ path: join(outDir, "status-page-phone-nl.png"), fullPage: true });
  return { ...facts, ...(await page.evaluate(overflow)), changed: later !== first };
}

async function desktopNl(page) {
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await waitForHost(page);
  await page.locator("#legend summary").click();
  await page.screenshot({ path: join(outDir, "status-page-desktop-nl.png"), fullPage: true });
  return { ...(await hostFacts(page)), ...(await page.evaluate(overflow)) };
}

async function phoneEn(page) {
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await waitForHost(page);
  const facts = await hostFacts(page);
  await page.locator('nav.lang a[hreflang="nl"]').click();
  await page.waitForFunction(() => document.documentElement.lang === "nl");
  return { ...facts, switchedTo: await page.evaluate(() => document.documentElement.lang) };
}

async function techPage(page, shot = null) {
  await page.goto(base + "/tech", { waitUntil: "domcontentloaded" });
  await page.locator("#tech table").first().waitFor({ timeout: 20000 });
  const facts = await page.evaluate(() => ({
    text: document.querySelector("#tech").innerText,
    actions: document.querySelectorAll("#actions, #restart-buttons button, #upload-now").length,
    actionsOff: document.querySelector("#actions-off")?.textContent || "",
  }));
  if (shot) await page.screenshot({ path: join(outDir, shot), fullPage: true });
  return { ...facts, ...(await page.evaluate(overflow)) };
}

try {
  result.phone_nl = await withPage("nl-BE", PHONE, phoneNl);
  result.desktop_nl = await withPage("nl-BE", DESKTOP, desktopNl);
  result.phone_en = await withPage("en-GB", PHONE, phoneEn);
  result.tech_phone = await withPage("nl-BE", PHONE, (p) => techPage(p, "status-page-tech-phone.png"));
  result.tech_desktop = await withPage("en-GB", DESKTOP, (p) => techPage(p));
  result.ok = true;
} catch (err) {
  result.error = String((err && err.stack) || err);
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
