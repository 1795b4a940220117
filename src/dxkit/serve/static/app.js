// dxkit web page: choose a model, upload a scan, see findings and the heatmap.
// Plain JavaScript, no build step. The server returns the scan as small arrays (int16
// Hounsfield units for CT, uint8 otherwise), so windows and slice sliders work without
// another request; nothing is stored on the server between requests.
"use strict";

const state = { models: [], presets: {}, limits: {}, result: null, planes: {} };
const $ = (id) => document.getElementById(id);
const PLANE_FIELDS = ["axial", "coronal", "sagittal"];
// Perceptually ordered dark-to-bright stops (inferno-like) for the heatmap.
const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
// What the file chooser offers for each input kind a model accepts (/v1/models "accepts").
const ACCEPT = {
  png: { ext: [".png", "image/png"], word: "PNG" },
  jpeg: { ext: [".jpg", ".jpeg", "image/jpeg"], word: "JPEG" },
  dicom: { ext: [".dcm", ".dicom", "application/dicom"], word: "one DICOM" },
  "dicom-series": { ext: [], word: "the DICOM files of a series" },
  zip: { ext: [".zip", "application/zip"], word: "a zip of them" },
  npy: { ext: [".npy"], word: ".npy" },
};

function token() {
  return $("token").value || sessionStorage.getItem("dxkit-token") || "";
}

async function api(path, options = {}) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error("The server cannot be reached. Is dxkit serve still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) throw new Error(errorText(response.status, body));
  return body;
}

function errorText(status, body) {
  const message = body && body.error ? body.error.message : `The server answered ${status}.`;
  const lead = {
    401: "This server needs an access token: open “Access token” at the top and paste it.\n",
    413: "The upload is too large for this server.\n",
    415: "This kind of file is not accepted.\n",
    422: "The scan could not be used.\n",
  }[status] || "";
  return lead + message;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function setStatus(text) { $("status").textContent = text; }

// --- models -----------------------------------------------------------------------------

async function loadModels() {
  try {
    const body = await api("/v1/models");
    state.models = body.models;
    state.presets = body.window_presets;
    state.limits = body.limits;
    $("model").replaceChildren(...state.models.map((m) => new Option(
      `${m.name} — ${m.findings.join(", ")} (${m.backend})`, m.name)));
    showError("");
    modelChanged();
  } catch (err) {
    showError(err.message);
  }
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function modelChanged() {
  const m = currentModel();
  if (!m) return;
  const exam = m.kind === "exam";
  $("exam-upload").hidden = !exam;
  $("single-upload").hidden = exam;
  // Offer only what this model reads: a CT model is not offered PNG/JPEG.
  const kinds = (m.accepts || []).filter((k) => k in ACCEPT);
  $("files").accept = kinds.flatMap((k) => ACCEPT[k].ext).join(",");
  $("files-label").textContent = "Scan: " + kinds.map((k) => ACCEPT[k].word).join(", ");
  const heat = m.explain ? "heatmaps: " + m.explain_methods.join(", ") : "no heatmaps (ONNX)";
  $("model-info").textContent = `Finds ${m.findings.join(", ")}. Expects ${m.expected_input}. ${heat}.`;
}

// --- analysis -----------------------------------------------------------------------------

function uploadForm(finding) {
  const m = currentModel();
  const form = new FormData();
  form.append("model", m.name);
  form.append("view", "true");
  if (finding) form.append("finding", finding);
  let bytes = 0;
  if (m.kind === "exam") {
    for (const plane of PLANE_FIELDS) {
      const file = $("plane-" + plane).files[0];
      if (!file) throw new Error(`Choose the ${plane} .npy file of the exam.`);
      form.append(plane, file, file.name);
      bytes += file.size;
    }
  } else {
    const files = [...$("files").files];
    if (!files.length) throw new Error("Choose a scan to upload first.");
    for (const file of files) { form.append("files", file, file.name); bytes += file.size; }
  }
  const limit = (state.limits.max_upload_mb || 0) * 1048576;
  if (limit && bytes > limit) {
    throw new Error(`The upload is ${(bytes / 1048576).toFixed(0)} MB; this server accepts up to ${state.limits.max_upload_mb} MB.`);
  }
  return form;
}

// The previous result leaves the screen the moment a new analysis starts: a result is
// never shown beside an error or under another scan's name.
function clearResult() {
  state.result = null;
  state.planes = {};
  $("result").hidden = true;
  $("viewer").hidden = true;
  $("planes").replaceChildren();
  $("findings").querySelector("tbody").replaceChildren();
  $("heatmap-note").hidden = true;
  $("heat-legend").hidden = true;
  $("input-warning").hidden = true;
  showError("");
}

function uploadedNames(m) {
  if (m.kind === "exam") return PLANE_FIELDS.map((p) => $("plane-" + p).files[0]).filter(Boolean).map((f) => f.name);
  return [...$("files").files].map((f) => f.name);
}

async function analyse(finding) {
  const m = currentModel();
  clearResult();
  let form;
  try { form = uploadForm(finding); } catch (err) { showError(err.message); return; }
  const names = uploadedNames(m);
  $("analyse").disabled = true;
  setStatus(m.explain ? "Analysing and computing the heatmap…" : "Analysing…");
  const started = performance.now();
  try {
    const result = await api(m.explain ? "/v1/explain" : "/v1/predict", { method: "POST", body: form });
    state.result = result;
    renderLabel(result, names);
    renderFindings(result, m);
    renderViewer(result, m);
    $("result").hidden = false;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`Done in ${secs} s (request ${result.request_id}).`);
  } catch (err) {
    clearResult();
    setStatus("");
    showError(err.message);
  } finally {
    $("analyse").disabled = false;
  }
}

function renderLabel(result, names) {
  const scan = result.scan;
  const shown = names.length > 3 ? `${names.slice(0, 3).join(", ")} and ${names.length - 3} more` : names.join(", ");
  const slices = Object.values(scan.planes).reduce((n, p) => n + p.slices, 0);
  const parts = [`Result for ${shown}`];
  if (scan.series_description) parts.push(`series “${scan.series_description}”`);
  parts.push(`${slices} slice${slices === 1 ? "" : "s"}`);
  const when = result.computed_at ? new Date(result.computed_at) : new Date();
  parts.push(`computed ${when.toLocaleString()}`);
  $("result-label").textContent = parts.join(" · ");
  const warning = typeof result.input_warning === "string" ? result.input_warning : "";
  $("input-warning").textContent = warning;
  $("input-warning").hidden = !warning;
}

function renderFindings(result, model) {
  const body = $("findings").querySelector("tbody");
  const explained = result.heatmap ? result.heatmap.finding : null;
  body.replaceChildren(...result.findings.map((f) => {
    const row = document.createElement("tr");
    row.dataset.finding = f.name;
    if (f.name === explained) row.classList.add("explained");
    const name = document.createElement("td");
    name.className = "finding-name";
    name.textContent = f.name;
    if (model.explain) {
      name.title = "Show the heatmap of this finding";
      name.addEventListener("click", () => analyse(f.name));
    }
    const prob = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = `<div class="fill"></div><div class="threshold"></div>`;
    bar.querySelector(".fill").style.width = `${(100 * f.probability).toFixed(1)}%`;
    bar.querySelector(".threshold").style.left = `${(100 * f.threshold).toFixed(1)}%`;
    const value = document.createElement("div");
    value.className = "value";
    value.textContent = `${f.probability.toFixed(3)} (threshold ${f.threshold.toFixed(3)})`;
    prob.append(bar, value);
    const call = document.createElement("td");
    call.textContent = f.positive ? "positive" : "negative";
    call.className = f.positive ? "call-positive" : "call-negative";
    row.append(name, prob, call);
    return row;
  }));
  $("findings").hidden = false;
  const note = $("heatmap-note");
  if (result.heatmap) {
    const h = result.heatmap;
    note.textContent = `Heatmap: ${h.method} on layer ${h.layer} for “${h.finding}”; brightest at ${h.peak.plane} slice ${h.peak.slice + 1}. Click a finding to explain another.`;
    renderLegend(h.scale);
  } else {
    note.textContent = "This model runs as ONNX: predictions only, no heatmap.";
  }
  note.hidden = false;
}

// The colour bar under the findings: the heat colours 0 → 1, the "relevant" mark, and what
// 1 means (the map's maximum, dimmed by probability / threshold for a call under it).
function renderLegend(scale) {
  if (!scale) return;
  const bar = $("heat-bar");
  const ctx = bar.getContext("2d");
  for (let x = 0; x < bar.width; x++) {
    const [r, g, b] = heatColor(x / (bar.width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, bar.height);
  }
  const mark = Math.round(scale.relevant * (bar.width - 1));
  ctx.fillStyle = "#e8edf2";
  ctx.fillRect(mark - 1, 0, 2, bar.height);
  $("relevant-mark").style.left = `${(100 * scale.relevant).toFixed(1)}%`;
  const shared = scale.shared ? ` (one scale for ${scale.shared})` : "";
  $("heat-scale").textContent = `Colours are relative: 1 = this answer's map maximum${shared}` +
    (scale.weight < 1 ? `, drawn at ×${scale.weight.toFixed(2)} because the probability is under the threshold — a negative call never reaches full heat.` : ".");
  bar.dataset.weight = String(scale.weight);
  $("heat-legend").hidden = false;
}

// --- viewer -------------------------------------------------------------------------------

function decode(b64, dtype) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return dtype === "int16" ? new Int16Array(bytes.buffer) : bytes;
}

function fillWindowSelect(result, model) {
  const select = $("window");
  const options = [];
  const hu = Object.values(result.view.planes).some((p) => p.values === "hounsfield");
  if (hu) {
    (result.view.file_windows || []).forEach((w, i) =>
      options.push(new Option(`file window ${i + 1} (${w.center}/${w.width})`, `file:${i}`)));
    for (const [name, w] of Object.entries(state.presets)) {
      options.push(new Option(`${name.replace("_", " ")} (${w.center}/${w.width})`, `preset:${name}`));
    }
    options.push(new Option("full range", "full"));
  } else {
    options.push(new Option("not CT: intensities as stored", "full"));
  }
  select.replaceChildren(...options);
  select.disabled = !hu;
  const first = (model.preprocessing && model.preprocessing.window_names) || [];
  const wanted = first.length && state.presets[first[0]] ? `preset:${first[0]}` : options[0].value;
  select.value = wanted;
}

function currentWindow(plane) {
  const value = $("window").value;
  if (value.startsWith("preset:")) return state.presets[value.slice(7)];
  if (value.startsWith("file:")) return state.result.view.file_windows[Number(value.slice(5))];
  return { center: (plane.range[0] + plane.range[1]) / 2, width: Math.max(1, plane.range[1] - plane.range[0]) };
}

function renderViewer(result, model) {
  fillWindowSelect(result, model);
  const container = $("planes");
  container.replaceChildren();
  state.planes = {};
  const heat = result.heatmap;
  const explained = heat ? result.findings.find((f) => f.name === heat.finding) : null;
  const deciding = explained ? explained.deciding_slices || {} : {};
  for (const [name, view] of Object.entries(result.view.planes)) {
    const plane = {
      name, view, pixels: decode(view.data, view.dtype),
      deciding: name in deciding ? deciding[name] : null,
      heat: heat && heat.view && heat.view[name] ? heat.view[name] : null,
    };
    if (plane.heat) plane.heatPixels = decode(plane.heat.data, "uint8");
    plane.slice = plane.deciding !== null ? plane.deciding : Math.floor(view.slices / 2);
    buildPlaneCard(plane, container, result, explained);
    state.planes[name] = plane;
    draw(plane);
  }
  $("viewer").hidden = false;
}

function buildPlaneCard(plane, container, result, explained) {
  const card = document.createElement("div");
  card.className = "plane";
  card.dataset.plane = plane.name;
  const title = document.createElement("h3");
  const kinds = { image: "image", dicom: "DICOM", series: "DICOM series", array: "array", exam: "exam" };
  title.textContent = plane.name === "scan"
    ? `Scan (${kinds[result.scan.kind] || result.scan.kind})`
    : plane.name[0].toUpperCase() + plane.name.slice(1);
  plane.canvas = document.createElement("canvas");
  plane.canvas.width = plane.view.width;
  plane.canvas.height = plane.view.height;
  plane.canvas.setAttribute("aria-label", `${plane.name} view`);
  card.append(title, plane.canvas);
  if (plane.view.slices > 1) {
    const row = document.createElement("div");
    row.className = "slider-row";
    plane.slider = document.createElement("input");
    plane.slider.type = "range";
    plane.slider.min = 0;
    plane.slider.max = plane.view.slices - 1;
    plane.slider.value = plane.slice;
    plane.slider.setAttribute("aria-label", `${plane.name} slice`);
    plane.slider.addEventListener("input", () => { plane.slice = Number(plane.slider.value); draw(plane); });
    plane.label = document.createElement("span");
    plane.label.className = "slice-label";
    row.append(plane.slider, plane.label);
    card.append(row);
    if (plane.deciding !== null) {
      const go = document.createElement("button");
      go.type = "button";
      go.className = "link";
      go.textContent = `go to deciding slice ${plane.deciding + 1}`;
      go.addEventListener("click", () => { plane.slice = plane.deciding; plane.slider.value = plane.slice; draw(plane); });
      card.append(go);
    }
    if (result.per_slice && plane.name === result.per_slice.plane && explained) {
      plane.strip = document.createElement("canvas");
      plane.strip.className = "strip";
      plane.strip.title = `probability of ${explained.name} per slice`;
      plane.stripValues = result.per_slice.probabilities.map((row) => row[result.findings.indexOf(explained)]);
      plane.stripThreshold = explained.threshold;
      card.append(plane.strip);
    }
  }
  plane.badge = document.createElement("span");
  plane.badge.className = "badge";
  plane.badge.hidden = true;
  card.append(plane.badge);
  container.append(card);
}

function heatColor(t) {
  const x = Math.min(1, Math.max(0, t)) * (HEAT_STOPS.length - 1);
  const i = Math.min(HEAT_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return HEAT_STOPS[i].map((a, k) => a + f * (HEAT_STOPS[i + 1][k] - a));
}

function draw(plane) {
  const { view, pixels } = plane;
  const w = view.width, h = view.height, c = view.channels;
  const ctx = plane.canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const out = image.data;
  const perSlice = w * h * c;
  const base = plane.slice * perSlice;
  const hu = view.values === "hounsfield";
  const win = hu ? currentWindow(view) : null;
  const low = hu ? win.center - win.width / 2 : 0;
  const scale = hu ? 255 / win.width : 1;
  for (let p = 0; p < w * h; p++) {
    for (let k = 0; k < 3; k++) {
      const ch = c === 3 ? k : 0;
      let v = pixels[base + ch * w * h + p];
      if (hu) v = Math.min(255, Math.max(0, (v - low) * scale));
      out[4 * p + k] = v;
    }
    out[4 * p + 3] = 255;
  }
  let heatShown = false;
  const index = plane.heat ? plane.heat.slices.indexOf(plane.slice) : -1;
  if (index >= 0 && $("heatmap-toggle").checked) {
    const alpha = Number($("opacity").value) / 100;
    const offset = index * w * h;
    for (let p = 0; p < w * h; p++) {
      const t = plane.heatPixels[offset + p] / 255;
      // Opacity grows with the evidence: the weakest fifth stays clear, the peak is strongest.
      const a = t <= 0.2 ? 0 : alpha * (t - 0.2) / 0.8;
      const rgb = heatColor(t);
      for (let k = 0; k < 3; k++) out[4 * p + k] = (1 - a) * out[4 * p + k] + a * rgb[k];
    }
    heatShown = true;
  }
  ctx.putImageData(image, 0, 0);
  plane.canvas.dataset.heatmap = heatShown ? "shown" : "hidden";
  const onDeciding = plane.deciding !== null && plane.slice === plane.deciding;
  plane.canvas.classList.toggle("deciding", onDeciding);
  plane.badge.hidden = !onDeciding;
  if (onDeciding) plane.badge.textContent = `deciding slice for ${state.result.heatmap ? state.result.heatmap.finding : "the finding"}`;
  if (plane.label) {
    const note = plane.heat && index < 0 ? " · no heatmap" : "";
    plane.label.textContent = `slice ${plane.slice + 1} / ${view.slices}${note}`;
  }
  if (plane.strip) drawStrip(plane);
}

function drawStrip(plane) {
  const canvas = plane.strip;
  canvas.width = canvas.clientWidth || 300;
  const ctx = canvas.getContext("2d");
  const n = plane.stripValues.length, w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  plane.stripValues.forEach((v, i) => {
    ctx.fillStyle = v >= plane.stripThreshold ? "#ff6b5b" : "#4fa3ff";
    const x = (i / n) * w;
    ctx.fillRect(x, h * (1 - v), Math.max(1, w / n - 1), h * v);
  });
  ctx.fillStyle = "#e8edf2";
  ctx.fillRect(0, h * (1 - plane.stripThreshold), w, 1);
  ctx.fillRect(((plane.slice + 0.5) / n) * w - 1, 0, 2, h);
}

function redrawAll() { Object.values(state.planes).forEach(draw); }

// --- wiring -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("dxkit-token") || "";
  $("token-form").addEventListener("submit", (event) => event.preventDefault());
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("dxkit-token", $("token").value);
    loadModels();
  });
  $("model").addEventListener("change", modelChanged);
  $("upload-form").addEventListener("submit", (event) => { event.preventDefault(); analyse(null); });
  $("window").addEventListener("change", redrawAll);
  $("heatmap-toggle").addEventListener("change", redrawAll);
  $("opacity").addEventListener("input", redrawAll);
  loadModels();
});
