// SadTalker front-end extension.
//  * Coefficient nodes (audio/reference to coefficients, load/save, one-node SadTalker): after a run, plot
//    the motion curves they send in their `ui` output: mouth (expression 0), blink, yaw / pitch / roll,
//    expression offset (distance from the source's own expression).
//  * Render / one-node SadTalker: play the rendered frames with their audio (a small mp4 the node
//    writes to ComfyUI's temp folder).
//  * After a page reload, show them again from ComfyUI's /history (the nodes are output nodes, so a
//    re-run served from cache re-sends them too).
//  * Fresh nodes: seeds start "fixed" (an unchanged re-run is then served from cache instead of
//    re-rendering), and the model loader is wide enough to show its checkpoint label.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const CURVES = [
  { key: "mouth", label: "mouth (exp 0)", color: "#f5a623", axis: "exp" },
  { key: "blink", label: "blink", color: "#7ed321", axis: "unit" },
  { key: "yaw", label: "yaw°", color: "#4a90e2", axis: "deg" },
  { key: "pitch", label: "pitch°", color: "#d0021b", axis: "deg" },
  { key: "roll", label: "roll°", color: "#bd10e0", axis: "deg" },
  // L2 distance of each frame's 64 expression coefficients from the source picture's own
  { key: "expression", label: "expression Δ", color: "#50e3c2", axis: "offset" },
];
const PLOT_HEIGHT = 170;
const VIDEO_HEIGHT = 260;
const WIDGET_MARGIN = 10;

// Every loop here is bounded by the pixels drawn, never by the data (a crafted coefficient file or
// /history entry can hold any numbers): at most MAX_SAMPLES_PER_PX samples per pixel of plot width.
const MAX_SAMPLES_PER_PX = 2;
const MIN_GRID_GAP_PX = 8;

// Indices of `values` to draw on a plot `width` pixels wide: all of them, or an even stride.
function sampleIndices(length, width) {
  const n = Math.max(0, Math.min(length | 0, 1e9));
  const stride = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(width * MAX_SAMPLES_PER_PX))));
  const out = [];
  for (let i = 0; i < n; i += stride) out.push(i);
  return out;
}

// A finite positive number, or the fallback.
function positive(value, fallback) {
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

function range(values, indices) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const i of indices) {
    const v = values[i];
    if (Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-6) return [lo - 1, hi + 1];
  return [lo, hi];
}

// Seconds between grid lines: 1 s, or the smallest of 2, 5, 10, 20, 50 ... s that keeps the lines
// at least MIN_GRID_GAP_PX apart on a plot `width` pixels wide showing `seconds`.
function gridStep(seconds, width) {
  const most = Math.max(1, Math.floor(width / MIN_GRID_GAP_PX));
  let step = 1;
  for (let k = 0; k < 40 && seconds / step > most; k += 1) step *= [2, 2.5, 2][k % 3];
  return step;
}

// Draws at the canvas's laid-out size; returns the legend's clickable spans ({key, x0, x1}).
// Before ComfyUI has mounted the widget (size 0) it draws nothing: the ResizeObserver redraws later.
export function drawCurves(canvas, data, hidden) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!data || width < 2 || height < 2) return [];
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, height);
  const pad = { l: 6, r: 6, t: 20, b: 16 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const frames = Math.floor(positive(data.frames, 0));
  const step = positive(data.step, 1);
  const fps = positive(data.fps, 25);
  const samples = {};
  for (const c of CURVES) {
    const values = data[c.key];
    if (Array.isArray(values)) samples[c.key] = sampleIndices(values.length, w);
  }

  // one shared range per axis kind, so yaw/pitch/roll compare directly
  const axes = {};
  for (const c of CURVES) {
    const values = data[c.key];
    if (!samples[c.key] || hidden.has(c.key)) continue;
    const [lo, hi] = range(values, samples[c.key]);
    const a = axes[c.axis] || [Infinity, -Infinity];
    axes[c.axis] = [Math.min(a[0], lo), Math.max(a[1], hi)];
  }
  if (axes.unit) axes.unit = [0, 1];

  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  const seconds = frames / fps;
  const every = gridStep(seconds, w);
  for (let k = 0; k * every <= seconds && k <= w; k += 1) {
    const x = pad.l + (frames > 1 ? (k * every * fps) / (frames - 1) : 0) * w;
    ctx.beginPath();
    ctx.moveTo(x, pad.t);
    ctx.lineTo(x, pad.t + h);
    ctx.stroke();
  }

  for (const c of CURVES) {
    const values = data[c.key];
    if (!samples[c.key] || hidden.has(c.key) || !axes[c.axis]) continue;
    const [lo, hi] = axes[c.axis];
    ctx.strokeStyle = c.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    samples[c.key].forEach((i, n) => {
      const frame = i * step;
      const x = pad.l + (frames > 1 ? frame / (frames - 1) : 0.5) * w;
      const y = pad.t + h - ((values[i] - lo) / (hi - lo)) * h;
      if (n === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  ctx.font = "11px sans-serif";
  const hits = [];
  let x = pad.l;
  for (const c of CURVES) {
    if (!data[c.key]) continue;
    const textWidth = ctx.measureText(c.label).width;
    ctx.fillStyle = hidden.has(c.key) ? "#555" : c.color;
    ctx.fillText(c.label, x, 13);
    hits.push({ key: c.key, x0: x, x1: x + textWidth });
    x += textWidth + 10;
  }
  ctx.fillStyle = "#999";
  ctx.fillText(`${frames} frames · ${(frames / fps).toFixed(2)} s`, pad.l, height - 3);
  return hits;
}

// One DOM widget per node and name. ComfyUI sizes the element (width and height 100% of the widget
// area, which is the widget's height minus its margin on each side), so ask for the content height
// plus both margins and let the element fill whatever the node gives it.
function ensureWidget(node, name, build, height) {
  node._sadtalker = node._sadtalker || {};
  if (node._sadtalker[name]) return node._sadtalker[name];
  const element = build();
  element.style.width = "100%";
  element.style.height = "100%";
  element.style.display = "block";
  element.style.boxSizing = "border-box";
  const widget = node.addDOMWidget(name, "sadtalker_" + name, element, {
    serialize: false,
    hideOnZoom: false,
    margin: WIDGET_MARGIN,
    getMinHeight: () => height + 2 * WIDGET_MARGIN,
  });
  const entry = { element, widget };
  node._sadtalker[name] = entry;
  const onRemove = widget.onRemove;
  widget.onRemove = function () {
    entry.observer?.disconnect();
    return onRemove?.apply(this, arguments);
  };
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], 300), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
  return entry;
}

function showCurves(node, data) {
  if (!data) return;
  const entry = ensureWidget(
    node,
    "curves",
    () => {
      const canvas = document.createElement("canvas");
      canvas.title = "Click a legend label to hide or show that curve";
      return canvas;
    },
    PLOT_HEIGHT,
  );
  const state = node._sadtalker;
  state.hidden = state.hidden || new Set();
  state.curveData = data;
  const element = entry.element;
  const redraw = () => {
    state.legendHits = drawCurves(element, state.curveData, state.hidden);
  };
  if (!entry.observer && typeof ResizeObserver !== "undefined") {
    entry.observer = new ResizeObserver(() => redraw());
    entry.observer.observe(element);
  }
  element.onclick = (event) => {
    const rect = element.getBoundingClientRect();
    // the widget may be drawn scaled (canvas zoom): map back to the canvas's own pixels
    const scale = rect.width / (element.clientWidth || rect.width || 1);
    const x = (event.clientX - rect.left) / scale;
    const y = (event.clientY - rect.top) / scale;
    if (y > 18) return;
    const hit = (state.legendHits || []).find((h) => x >= h.x0 && x <= h.x1);
    if (!hit) return;
    if (state.hidden.has(hit.key)) state.hidden.delete(hit.key);
    else state.hidden.add(hit.key);
    redraw();
  };
  requestAnimationFrame(redraw);
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

function showOutput(node, message) {
  try {
    if (message?.sadtalker_curves?.length) showCurves(node, message.sadtalker_curves[0]);
    if (message?.sadtalker_video?.length) showVideo(node, message.sadtalker_video[0]);
  } catch (error) {
    console.warn("SadTalker preview:", error);
  }
}

const HISTORY_ITEMS = 64;
const LOADER_MIN_WIDTH = 420; // "checkpoint" plus SadTalker_V0.0.2_256.safetensors without cutting the label

const MAX_PROMPT_NODES = 1000; // prompts are checked node by node: at most this many

// Whether a run's prompt ({node_id: {class_type, inputs}}) was made from this graph as it is now:
// every widget value it used (links are arrays and are skipped) equals the graph's current one, and
// every node it ran is still in the graph. A copy of an example loaded again with another picture
// or speech therefore does not show the earlier run's frames and curves.
function sameInputs(prompt, graphInputs) {
  if (!graphInputs) return true;
  const entries = Object.entries(prompt || {});
  if (entries.length > MAX_PROMPT_NODES) return false;
  for (const [id, node] of entries) {
    const current = graphInputs.get(String(id));
    if (!current) return false;
    for (const [name, value] of Object.entries(node?.inputs || {}).slice(0, MAX_PROMPT_NODES)) {
      if (Array.isArray(value) || !(name in current)) continue;
      if (current[name] !== value) return false;
    }
  }
  return true;
}

// The widget values of every node of a graph: Map(node id -> {widget name: value}).
export function graphInputs(nodes) {
  const found = new Map();
  for (const node of (nodes || []).slice(0, MAX_PROMPT_NODES)) {
    const values = {};
    for (const widget of (node.widgets || []).slice(0, MAX_PROMPT_NODES)) {
      if (widget?.name) values[widget.name] = widget.value;
    }
    found.set(String(node.id), values);
  }
  return found;
}

// The newest SadTalker `ui` output of every node of this graph in a /history answer
// ({prompt_id: {prompt: [number, id, prompt, extra_data, outputs], outputs: {node_id: ui}}}).
// Only runs of this workflow count (same workflow id when both have one) whose inputs are the
// graph's current ones (`inputs`, from graphInputs; omitted = not checked), and only nodes of the
// same type under the same id. Returns Map(node id -> ui).
export function latestOutputs(history, graphId, nodeTypes, inputs) {
  const runs = Object.values(history || {}).filter((run) => run?.outputs && Array.isArray(run.prompt));
  runs.sort((a, b) => (a.prompt[0] ?? 0) - (b.prompt[0] ?? 0));
  const found = new Map();
  for (const run of runs.slice(-HISTORY_ITEMS)) {
    const workflowId = run.prompt[3]?.extra_pnginfo?.workflow?.id;
    if (graphId && workflowId && workflowId !== graphId) continue;
    if (!sameInputs(run.prompt[2], inputs)) continue;
    for (const [id, ui] of Object.entries(run.outputs).slice(0, MAX_PROMPT_NODES)) {
      const type = nodeTypes.get(String(id));
      if (!type?.startsWith("SadTalker") || run.prompt[2]?.[id]?.class_type !== type) continue;
      if (ui?.sadtalker_curves?.length || ui?.sadtalker_video?.length) found.set(String(id), ui);
    }
  }
  return found;
}

// After a (re)load: put back the previews and curves the last runs of this workflow showed.
export async function restoreFromHistory(graph) {
  const nodes = graph?.nodes || [];
  const nodeTypes = new Map(nodes.filter((n) => n.type?.startsWith("SadTalker")).map((n) => [String(n.id), n.type]));
  if (!nodeTypes.size) return 0;
  let history;
  try {
    const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
    if (!response.ok) return 0;
    history = await response.json();
  } catch (error) {
    console.warn("SadTalker: could not read /history", error);
    return 0;
  }
  let shown = 0;
  for (const [id, ui] of latestOutputs(history, graph.id, nodeTypes, graphInputs(nodes))) {
    const node = nodes.find((n) => String(n.id) === id);
    if (node && !node._sadtalker?.curveData && !node._sadtalker?.video) {
      showOutput(node, ui);
      shown += 1;
    }
  }
  return shown;
}

app.registerExtension({
  name: "SadTalker.CurvesAndPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("SadTalker")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      showOutput(this, message);
      return result;
    };
    // LiteGraph calls onNodeCreated synchronously right after building the node and before a saved
    // workflow's values are applied (configure), so these are defaults only: saved values still win.
    // (The extensions' nodeCreated hook runs asynchronously, after configure, so it cannot be used.)
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      for (const widget of this.widgets || []) {
        if (widget.name === "control_after_generate") widget.value = "fixed";
      }
      if (nodeData.name === "SadTalkerModelLoader" && this.size && this.size[0] < LOADER_MIN_WIDTH) {
        this.setSize?.([LOADER_MIN_WIDTH, this.size[1]]);
      }
      return result;
    };
  },
  async afterConfigureGraph() {
    await restoreFromHistory(app.graph);
  },
});
