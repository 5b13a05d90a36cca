// The demo page: pick a preset and text, Start / Pause / Reset, a live loss
// chart, tokens/s, step count, a sample every N steps, the adapter's name,
// and a clear message where WebGPU is unavailable.

import init, { WebTrainer, installPanicHook } from "./pkg/kiln_web.js";
import { LossChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const chart = new LossChart($("chart"));

// Exposed for the end-to-end test and for poking at from the console.
const state = {
  trainer: null,
  key: null,
  running: false,
  busy: false,
  loop: null,
  history: [],
  samples: [],
  tps: null,
  error: null,
  ready: false,
};
window.kilnDemo = state;

function status(msg, isError = false) {
  const el = $("status");
  el.textContent = msg;
  el.classList.toggle("error", isError);
}

function fail(e) {
  const msg = e && e.message ? e.message : String(e);
  state.error = msg;
  state.running = false;
  status(msg, true);
  console.error(e);
  updateButtons();
}

function updateButtons() {
  const ready = state.ready && !state.busy;
  $("start").disabled = !ready || state.running;
  $("pause").disabled = !state.running;
  $("reset").disabled = !ready || !state.trainer;
  $("preset").disabled = state.running || state.busy;
  for (const r of document.querySelectorAll("input[name=source]")) r.disabled = state.running || state.busy;
  $("text").disabled = state.running || state.busy || source() !== "custom";
}

const source = () => document.querySelector("input[name=source]:checked").value;
const configKey = () => `${$("preset").value}|${source()}|${source() === "custom" ? $("text").value : ""}`;

async function checkWebGpu() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    return { ok: false, why: "This browser does not expose WebGPU (<code>navigator.gpu</code> is missing)." };
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { ok: false, why: `<code>navigator.gpu.requestAdapter()</code> failed: ${e.message}` };
  }
  if (!adapter) {
    return {
      ok: false,
      why: "WebGPU is present, but the browser offers no adapter (<code>requestAdapter()</code> returned null): " +
        "it may be disabled in the settings or blocked for this GPU or driver.",
    };
  }
  const info = adapter.info || {};
  return { ok: true, info: [info.vendor, info.architecture, info.description].filter(Boolean).join(" · ") };
}

function showUnsupported(why) {
  const el = $("unsupported");
  el.innerHTML =
    `<h2>WebGPU is not available here</h2><p>${why}</p>` +
    "<p>Kiln trains on the GPU through WebGPU. Try a recent Chrome or Edge (version 113 or later), " +
    "Safari 26, or Firefox 141+ on Windows; on Linux, Chrome may need " +
    "<code>chrome://flags/#enable-unsafe-webgpu</code>.</p>";
  el.hidden = false;
  status("WebGPU unavailable.", true);
}

function fmtTps(v) {
  if (v == null) return "—";
  return v >= 10000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}

function record(r) {
  state.history.push({ step: r.step, loss: r.loss, tokensPerSecond: r.tokensPerSecond });
  // Smoothed throughput; the first call also compiles every kernel, skip it.
  if (state.history.length > 1) {
    state.tps = state.tps == null ? r.tokensPerSecond : 0.7 * state.tps + 0.3 * r.tokensPerSecond;
  }
  chart.add(r.step, r.loss);
  $("stat-step").textContent = String(r.step);
  $("stat-loss").textContent = r.loss.toFixed(4);
  $("stat-tps").textContent = fmtTps(state.tps);
}

async function drawSample(step) {
  const t = state.trainer;
  const prompt = t.defaultPrompt();
  const n = Math.min(1000, Math.max(1, Number($("sample-length").value) || 120));
  const text = await t.sample(prompt, n, 0.8);
  state.samples.push({ step, prompt, text });
  const pre = $("sample");
  pre.textContent = "";
  const p = document.createElement("span");
  p.className = "prompt";
  p.textContent = prompt;
  // An untrained byte model emits control bytes and broken UTF-8: show
  // control characters as a middle dot so the text stays readable.
  const shown = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, "·");
  pre.append(p, document.createTextNode(shown));
  $("sample-step").textContent = `after step ${step}`;
}

async function runLoop() {
  // Steps per call: start at 1 (the first also compiles the kernels), then
  // aim for ~250 ms per call so the page stays lively.
  let chunk = 1;
  while (state.running) {
    const t0 = performance.now();
    const r = await state.trainer.step(chunk);
    const ms = performance.now() - t0;
    const prev = state.history.length ? state.history[state.history.length - 1].step : 0;
    record(r);
    const every = Math.max(1, Number($("sample-every").value) || 50);
    if (Math.floor(r.step / every) > Math.floor(prev / every)) {
      status(`Training… sampling at step ${r.step}`);
      await drawSample(r.step);
    }
    if (state.running) status(`Training… ${chunk} step${chunk > 1 ? "s" : ""} per update`);
    const target = Math.round((chunk * 250) / Math.max(ms, 1));
    chunk = Math.min(50, Math.max(1, Math.round(0.5 * chunk + 0.5 * target)));
  }
}

async function start() {
  if (state.running || state.busy) return;
  state.error = null;
  state.busy = true;
  updateButtons();
  try {
    const key = configKey();
    if (!state.trainer || state.key !== key) {
      const text = source() === "custom" ? $("text").value : null;
      status("Building the model…");
      if (state.trainer) state.trainer.free();
      state.trainer = null;
      const t = await WebTrainer.create($("preset").value, text);
      state.trainer = t;
      state.key = key;
      state.history = [];
      state.samples = [];
      state.tps = null;
      chart.clear();
      chart.setFloor(t.lossFloor);
      $("stat-floor").textContent = t.lossFloor == null ? "—" : t.lossFloor.toFixed(3);
      const name = t.adapterName();
      const label = name.startsWith("unnamed") && state.adapterInfo ? state.adapterInfo : name;
      $("adapter").textContent = label + (t.isCpuAdapter ? " · fallback (CPU) adapter" : "");
      $("model").textContent = t.describe();
      status("Compiling kernels (the first step takes a moment)…");
    } else {
      status("Training…");
    }
    state.running = true;
  } catch (e) {
    state.busy = false;
    fail(e);
    return;
  }
  state.busy = false;
  updateButtons();
  state.loop = runLoop()
    .then(() => {
      if (!state.error) status(`Paused at step ${state.trainer.stepCount}.`);
    })
    .catch(fail)
    .finally(() => {
      state.loop = null;
      updateButtons();
    });
}

async function pause() {
  state.running = false;
  updateButtons();
  status("Pausing after the current update…");
  if (state.loop) await state.loop;
}

async function reset() {
  await pause();
  if (!state.trainer) return;
  try {
    state.trainer.reset();
  } catch (e) {
    fail(e);
    return;
  }
  state.history = [];
  state.samples = [];
  state.tps = null;
  chart.clear();
  $("stat-step").textContent = "0";
  $("stat-loss").textContent = "—";
  $("stat-tps").textContent = "—";
  $("sample").textContent = "Samples from the model appear here while it trains.";
  $("sample-step").textContent = "";
  status("Reset to step 0 (same initialisation). Press Start.");
  updateButtons();
}

function configChanged() {
  // A different preset or text takes effect at the next Start, from step 0.
  if (state.trainer && state.key !== configKey()) {
    status("Settings changed: Start builds a new model.");
  }
  updateButtons();
}

async function main() {
  $("start").addEventListener("click", start);
  $("pause").addEventListener("click", pause);
  $("reset").addEventListener("click", reset);
  $("preset").addEventListener("change", configChanged);
  $("text").addEventListener("input", configChanged);
  for (const r of document.querySelectorAll("input[name=source]")) r.addEventListener("change", configChanged);
  chart.draw();

  const gpu = await checkWebGpu();
  if (!gpu.ok) {
    showUnsupported(gpu.why);
    return;
  }
  state.adapterInfo = gpu.info;
  $("adapter").textContent = gpu.info || "WebGPU adapter";
  try {
    await init();
    installPanicHook();
  } catch (e) {
    fail(new Error(`Loading the WebAssembly module failed: ${e.message || e}. Was web/build.sh run?`));
    return;
  }
  state.ready = true;
  status("Ready. Press Start to train.");
  updateButtons();
}

main();
