// A loss chart drawn by hand on a <canvas>: axes with "nice" ticks, the
// training loss as a line, and an optional dashed floor (the best possible
// loss on the built-in corpus). No libraries.

const COLORS = {
  grid: "#e9ecef",
  axis: "#adb5bd",
  text: "#66707c",
  line: "#d9480f",
  floor: "#2b8a3e",
};

/** Round-number tick positions covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return { ticks, step };
}

function fmt(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(digits, 4));
}

export class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.points = [];
    this.floor = null;
    this.resize();
    window.addEventListener("resize", () => { this.resize(); this.draw(); });
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const cssWidth = this.canvas.clientWidth || this.canvas.width;
    const cssHeight = Math.round(cssWidth * 0.45);
    this.canvas.style.height = `${cssHeight}px`;
    this.canvas.width = Math.round(cssWidth * dpr);
    this.canvas.height = Math.round(cssHeight * dpr);
    this.scale = dpr;
    this.w = cssWidth;
    this.h = cssHeight;
  }

  clear() {
    this.points = [];
    this.draw();
  }

  setFloor(floor) {
    this.floor = floor ?? null;
    this.draw();
  }

  add(step, loss) {
    this.points.push([step, loss]);
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const { w, h } = this;
    ctx.setTransform(this.scale, 0, 0, this.scale, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    const pad = { l: 56, r: 18, t: 16, b: 38 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;

    const pts = this.points;
    const maxStep = Math.max(10, pts.length ? pts[pts.length - 1][0] : 0);
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, l] of pts) { lo = Math.min(lo, l); hi = Math.max(hi, l); }
    if (this.floor != null) { lo = Math.min(lo, this.floor); hi = Math.max(hi, this.floor); }
    if (!Number.isFinite(lo)) { lo = 0; hi = 6; }
    const span = Math.max(hi - lo, 0.1);
    lo = Math.max(0, lo - span * 0.08);
    hi = hi + span * 0.05;

    const x = (s) => pad.l + (s / maxStep) * pw;
    const y = (l) => pad.t + (1 - (l - lo) / (hi - lo)) * ph;

    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    const yt = niceTicks(lo, hi, 6);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of yt.ticks) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(pad.l + pw, yy); ctx.stroke();
      ctx.fillStyle = COLORS.text;
      ctx.fillText(fmt(v, yt.step), pad.l - 8, yy);
    }
    const xt = niceTicks(0, maxStep, 6);
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of xt.ticks) {
      const xx = Math.round(x(v)) + 0.5;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(xx, pad.t); ctx.lineTo(xx, pad.t + ph); ctx.stroke();
      ctx.fillStyle = COLORS.text;
      ctx.fillText(String(v), xx, pad.t + ph + 6);
    }
    ctx.strokeStyle = COLORS.axis;
    ctx.beginPath();
    ctx.moveTo(pad.l + 0.5, pad.t); ctx.lineTo(pad.l + 0.5, pad.t + ph + 0.5); ctx.lineTo(pad.l + pw, pad.t + ph + 0.5);
    ctx.stroke();
    ctx.fillStyle = COLORS.text;
    ctx.fillText("step", pad.l + pw / 2, pad.t + ph + 22);
    ctx.save();
    ctx.translate(14, pad.t + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText("loss (nats/byte)", 0, 0);
    ctx.restore();

    if (this.floor != null) {
      const yy = y(this.floor);
      ctx.strokeStyle = COLORS.floor;
      ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(pad.l + pw, yy); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = COLORS.floor;
      ctx.textAlign = "right";
      ctx.textBaseline = "bottom";
      ctx.fillText(`entropy floor ${this.floor.toFixed(3)}`, pad.l + pw - 4, yy - 3);
    }

    if (pts.length) {
      ctx.strokeStyle = COLORS.line;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      pts.forEach(([s, l], i) => (i ? ctx.lineTo(x(s), y(l)) : ctx.moveTo(x(s), y(l))));
      ctx.stroke();
      const [s, l] = pts[pts.length - 1];
      ctx.fillStyle = COLORS.line;
      ctx.beginPath(); ctx.arc(x(s), y(l), 3.5, 0, 2 * Math.PI); ctx.fill();
    } else {
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Press Start to train", pad.l + pw / 2, pad.t + ph / 2);
    }
  }
}
