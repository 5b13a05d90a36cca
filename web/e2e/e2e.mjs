// End-to-end check of the demo page in headless Chromium with WebGPU:
// serves web/www, trains the tiny preset for some steps through the page's
// own buttons, checks that the displayed loss falls, that a sample and the
// adapter appear, that Pause and Reset work and that a browser without
// WebGPU gets a clear message; saves docs/web-demo.png.
//
//   node web/e2e/e2e.mjs [--steps N] [--screenshot PATH]
//
// Needs web/build.sh to have run (web/www/pkg). Chromium: $KILN_CHROMIUM or
// /usr/lib/chromium/chromium, with the flags from $WASM_ENV_WEBDRIVER_JSON
// (or ./webdriver.json) when present, else the SwiftShader WebGPU flags.

import { readFile, stat, mkdir } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, dirname, resolve, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const www = join(root, "web/www");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const STEPS = Number(opt("--steps", "12"));
const SHOT = resolve(root, opt("--screenshot", "docs/web-demo.png"));
const TIMEOUT_MS = Number(process.env.KILN_E2E_TIMEOUT_MS || 420000);

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
};

function serve(dir) {
  const server = createServer(async (req, res) => {
    try {
      const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
      let file = join(dir, path);
      if (!file.startsWith(dir)) throw new Error("outside");
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const body = await readFile(file);
      res.writeHead(200, { "content-type": MIME[extname(file)] || "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end("not found");
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

async function chromiumArgs() {
  const candidates = [process.env.WASM_ENV_WEBDRIVER_JSON, join(root, "webdriver.json")].filter(Boolean);
  for (const p of candidates) {
    try {
      const json = JSON.parse(await readFile(p, "utf8"));
      const a = json["goog:chromeOptions"]?.args;
      if (Array.isArray(a)) return { args: a, from: p };
    } catch {
      // try the next
    }
  }
  return {
    args: ["--no-sandbox", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader"],
    from: "built-in defaults",
  };
}

function check(cond, msg) {
  if (!cond) throw new Error(`e2e: ${msg}`);
  console.log(`  ok  ${msg}`);
}

async function main() {
  try {
    await stat(join(www, "pkg/kiln_web_bg.wasm"));
  } catch {
    throw new Error("web/www/pkg is missing: run web/build.sh first");
  }
  const server = await serve(www);
  const url = `http://127.0.0.1:${server.address().port}/`;
  const { args: flags, from } = await chromiumArgs();
  const executablePath = process.env.KILN_CHROMIUM || "/usr/lib/chromium/chromium";
  console.log(`e2e: ${url} in ${executablePath} (flags from ${from})`);
  const browser = await chromium.launch({ executablePath, args: [...flags, "--headless"], headless: true });
  const t0 = Date.now();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
    const logs = [];
    page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
    try {
      await page.goto(url);
      await page.waitForFunction(() => window.kilnDemo?.ready || window.kilnDemo?.error ||
        !document.getElementById("unsupported").hidden, null, { timeout: 60000 });
      check(await page.isHidden("#unsupported"), "WebGPU is available (no unsupported banner)");
      check(await page.isEnabled("#start"), "Start is enabled once the module has loaded");

      // Short samples every few steps: CPU adapters are slow.
      await page.fill("#sample-length", "48");
      await page.fill("#sample-every", String(Math.max(2, Math.floor(STEPS / 2))));
      await page.click("#start");
      await page.waitForFunction(() => window.kilnDemo.history.length >= 1 || window.kilnDemo.error, null,
        { timeout: TIMEOUT_MS });
      const err0 = await page.evaluate(() => window.kilnDemo.error);
      check(!err0, `training started${err0 ? `: ${err0}` : ""}`);
      const adapter = await page.textContent("#adapter");
      check(adapter && adapter.trim() !== "—", `adapter shown: ${adapter}`);
      const first = Number(await page.textContent("#stat-loss"));
      console.log(`  first displayed loss ${first} (step ${await page.textContent("#stat-step")})`);

      await page.waitForFunction((n) => {
        const d = window.kilnDemo;
        return d.error || (d.history.length && d.history[d.history.length - 1].step >= n && d.samples.length >= 1);
      }, STEPS, { timeout: TIMEOUT_MS });
      const err1 = await page.evaluate(() => window.kilnDemo.error);
      check(!err1, `trained ${STEPS} steps${err1 ? `: ${err1}` : ""}`);
      await page.click("#pause");
      await page.waitForFunction(() => !window.kilnDemo.running && !window.kilnDemo.loop, null, { timeout: TIMEOUT_MS });
      const step = Number(await page.textContent("#stat-step"));
      const last = Number(await page.textContent("#stat-loss"));
      const tps = await page.textContent("#stat-tps");
      console.log(`  last displayed loss ${last} at step ${step}; tokens/s shown: ${tps}`);
      check(step >= STEPS, `step counter reached ${step} ≥ ${STEPS}`);
      check(Number.isFinite(first) && Number.isFinite(last) && last < first - 0.2,
        `displayed loss fell: ${first} → ${last}`);
      const sample = await page.textContent("#sample");
      check(sample && !sample.startsWith("Samples from the model"), `a sample is shown: ${JSON.stringify(sample)}`);
      const history = await page.evaluate(() => window.kilnDemo.history);
      const steady = history.slice(1).filter((h) => Number.isFinite(h.tokensPerSecond));
      const meanTps = steady.reduce((a, h) => a + h.tokensPerSecond, 0) / Math.max(1, steady.length);
      console.log(`  history: ${history.map((h) => `${h.step}:${h.loss.toFixed(4)}`).join(" ")}`);
      console.log(`e2e: browser tiny preset ${meanTps.toFixed(0)} tokens/s over ${steady.length} updates after the first`);

      await mkdir(dirname(SHOT), { recursive: true });
      await page.screenshot({ path: SHOT, fullPage: true });
      console.log(`  saved ${SHOT}`);

      await page.click("#reset");
      await page.waitForFunction(() => document.getElementById("stat-step").textContent === "0", null, { timeout: 60000 });
      check(await page.isEnabled("#start"), "Reset returns to step 0 and Start is enabled");
    } catch (e) {
      console.log(logs.join("\n"));
      throw e;
    }

    // Without WebGPU the page must say so.
    const bare = await browser.newPage({ viewport: { width: 1280, height: 700 } });
    await bare.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined, configurable: true });
    });
    await bare.goto(url);
    await bare.waitForSelector("#unsupported:not([hidden])", { timeout: 30000 });
    const banner = await bare.textContent("#unsupported");
    check(banner.includes("WebGPU is not available") && banner.includes("navigator.gpu"),
      "without navigator.gpu the page shows a clear message");
    check(await bare.isDisabled("#start"), "and Start stays disabled");
    // An adapter request that fails is reported too.
    const noAdapter = await browser.newPage();
    await noAdapter.addInitScript(() => {
      GPU.prototype.requestAdapter = async () => null;
    });
    await noAdapter.goto(url);
    await noAdapter.waitForSelector("#unsupported:not([hidden])", { timeout: 30000 });
    check((await noAdapter.textContent("#unsupported")).includes("no adapter"),
      "when requestAdapter() gives null the page says so");
  } finally {
    await browser.close();
    server.close();
  }
  console.log(`e2e: passed in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
