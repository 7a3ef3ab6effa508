// SadTalker front-end extension.
//  * Coefficient nodes (audio/reference to coefficients, load/save, one-node SadTalker): after a run, plot
//    the motion curves they send in their `ui` output: mouth (expression 0), blink, yaw / pitch / roll.
//  * Render / one-node SadTalker: play the rendered frames with their audio (a small mp4 the node
//    writes to ComfyUI's temp folder).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const CURVES = [
  { key: "mouth", label: "mouth (exp 0)", color: "#f5a623", axis: "exp" },
  { key: "blink", label: "blink", color: "#7ed321", axis: "unit" },
  { key: "yaw", label: "yaw°", color: "#4a90e2", axis: "deg" },
  { key: "pitch", label: "pitch°", color: "#d0021b", axis: "deg" },
  { key: "roll", label: "roll°", color: "#bd10e0", axis: "deg" },
];
const PLOT_HEIGHT = 170;
const VIDEO_HEIGHT = 260;

function range(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-6) return [lo - 1, hi + 1];
  return [lo, hi];
}

function drawCurves(canvas, data, hidden) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || PLOT_HEIGHT;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, height);
  const pad = { l: 6, r: 6, t: 20, b: 16 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const frames = data.frames || 0;
  const step = data.step || 1;
  const fps = data.fps || 25;

  // one shared range per axis kind, so yaw/pitch/roll compare directly
  const axes = {};
  for (const c of CURVES) {
    const values = data[c.key];
    if (!values || hidden.has(c.key)) continue;
    const [lo, hi] = range(values);
    const a = axes[c.axis] || [Infinity, -Infinity];
    axes[c.axis] = [Math.min(a[0], lo), Math.max(a[1], hi)];
  }
  if (axes.unit) axes.unit = [0, 1];

  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  for (let s = 0; s <= frames / fps; s += 1) {
    const x = pad.l + (frames > 1 ? (s * fps) / (frames - 1) : 0) * w;
    ctx.beginPath();
    ctx.moveTo(x, pad.t);
    ctx.lineTo(x, pad.t + h);
    ctx.stroke();
  }

  for (const c of CURVES) {
    const values = data[c.key];
    if (!values || hidden.has(c.key) || !axes[c.axis]) continue;
    const [lo, hi] = axes[c.axis];
    ctx.strokeStyle = c.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const frame = i * step;
      const x = pad.l + (frames > 1 ? frame / (frames - 1) : 0.5) * w;
      const y = pad.t + h - ((v - lo) / (hi - lo)) * h;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  ctx.font = "11px sans-serif";
  let x = pad.l;
  for (const c of CURVES) {
    if (!data[c.key]) continue;
    ctx.fillStyle = hidden.has(c.key) ? "#555" : c.color;
    ctx.fillText(c.label, x, 13);
    c._hit = [x, x + ctx.measureText(c.label).width];
    x += ctx.measureText(c.label).width + 10;
  }
  ctx.fillStyle = "#999";
  ctx.fillText(`${frames} frames · ${(frames / fps).toFixed(2)} s`, pad.l, height - 3);
}

function ensureWidget(node, name, build, height) {
  node._sadtalker = node._sadtalker || {};
  if (node._sadtalker[name]) return node._sadtalker[name];
  const element = build();
  const widget = node.addDOMWidget(name, "sadtalker_" + name, element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => height,
    getHeight: () => height,
  });
  widget.computeSize = (width) => [width, height];
  node._sadtalker[name] = { element, widget };
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], 300), Math.max(node.size[1], size[1])]);
  return node._sadtalker[name];
}

function showCurves(node, data) {
  if (!data) return;
  const { element } = ensureWidget(
    node,
    "curves",
    () => {
      const canvas = document.createElement("canvas");
      canvas.style.width = "100%";
      canvas.style.height = PLOT_HEIGHT + "px";
      canvas.title = "Click a legend label to hide or show that curve";
      return canvas;
    },
    PLOT_HEIGHT,
  );
  const hidden = node._sadtalker.hidden || new Set();
  node._sadtalker.hidden = hidden;
  node._sadtalker.curveData = data;
  element.onclick = (event) => {
    const rect = element.getBoundingClientRect();
    const x = event.clientX - rect.left;
    if (event.clientY - rect.top > 18) return;
    for (const c of CURVES) {
      if (c._hit && x >= c._hit[0] && x <= c._hit[1]) {
        if (hidden.has(c.key)) hidden.delete(c.key);
        else hidden.add(c.key);
        drawCurves(element, node._sadtalker.curveData, hidden);
      }
    }
  };
  requestAnimationFrame(() => drawCurves(element, data, hidden));
}

function showVideo(node, entry) {
  if (!entry) return;
  const { element } = ensureWidget(
    node,
    "video",
    () => {
      const video = document.createElement("video");
      video.controls = true;
      video.loop = true;
      video.style.width = "100%";
      video.style.height = VIDEO_HEIGHT + "px";
      video.style.objectFit = "contain";
      video.style.background = "#000";
      return video;
    },
    VIDEO_HEIGHT,
  );
  const params = new URLSearchParams({
    filename: entry.filename,
    subfolder: entry.subfolder || "",
    type: entry.type || "temp",
    t: String(Date.now()),
  });
  element.src = api.apiURL("/view?" + params.toString());
}

app.registerExtension({
  name: "SadTalker.CurvesAndPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("SadTalker")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      try {
        if (message?.sadtalker_curves?.length) showCurves(this, message.sadtalker_curves[0]);
        if (message?.sadtalker_video?.length) showVideo(this, message.sadtalker_video[0]);
      } catch (error) {
        console.warn("SadTalker preview:", error);
      }
      return result;
    };
  },
});
