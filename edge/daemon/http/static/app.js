// The live page: polls /api/status and /healthz once a second and fills the page in.
// No external resources and no innerHTML: every value is set with textContent.
"use strict";

const WHO_PCT = 20;
const TARGET = 200;
const Z95 = 1.959963984540054;

function $(id) { return document.getElementById(id); }
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }
function num(x) { return typeof x === "number" && isFinite(x) ? x : null; }

// Wilson score interval, used only when the daemon sent counts without a summary.
function wilson(k, n) {
  if (!n) return null;
  const p = k / n, z2 = Z95 * Z95;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = Z95 * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);
  return [100 * Math.max(0, centre - half), 100 * Math.min(1, centre + half)];
}

function tallies(status) {
  const s = status.summary;
  if (s && typeof s.cells === "number") {
    return { cells: s.cells, blasts: s.blasts, pct: s.blast_pct, ci: s.blast_ci95_pct,
             comparison: s.who_comparison, session: s.session };
  }
  const c = status.counts || {};
  const cells = num(c.cells) ?? num(c.cells_total) ?? 0;
  const blasts = num(c.blasts) ?? num(c.blasts_total) ?? 0;
  const ci = wilson(blasts, cells);
  let comparison = "no cells";
  if (ci) comparison = ci[0] >= WHO_PCT ? "above" : ci[1] < WHO_PCT ? "below" : "inconclusive";
  return { cells, blasts, pct: cells ? 100 * blasts / cells : null, ci, comparison,
           session: status.session || null };
}

const COMPARISON_TEXT = {
  "above": "Above the WHO 20 % threshold (whole 95 % CI above it)",
  "below": "Below the WHO 20 % threshold (whole 95 % CI below it)",
  "inconclusive": "Not decided yet: the 95 % CI spans 20 %",
  "no cells": "No cells counted yet",
};

function showTallies(t) {
  setText("cells", String(t.cells));
  setText("blasts", String(t.blasts));
  setText("blast-pct", t.pct == null ? "\u2013" : t.pct.toFixed(1) + " %");
  setText("blast-ci", t.ci ? t.ci[0].toFixed(1) + "\u2013" + t.ci[1].toFixed(1) + " %" : "\u2013");
  setText("who", COMPARISON_TEXT[t.comparison] || t.comparison || "\u2013");
  const bar = $("ci-bar"), point = $("pct-point");
  if (t.ci) {
    bar.style.left = t.ci[0] + "%";
    bar.style.width = Math.max(0.5, t.ci[1] - t.ci[0]) + "%";
    point.style.left = t.pct + "%";
    point.style.display = "block";
  } else {
    bar.style.width = "0";
    point.style.display = "none";
  }
  $("diff-bar").style.width = Math.min(100, 100 * t.cells / TARGET) + "%";
  setText("diff-count", String(t.cells));
  setText("diff-status", t.cells >= TARGET ? "complete" : t.cells >= 100 ? "minimum of 100 reached" : "collecting");
  const s = t.session;
  setText("session", s && s.sample_id ? "Sample " + s.sample_id : "No active session");
  setText("session-note", s && s.id != null ? "Session " + s.id + (s.note ? " \u00b7 " + s.note : "") : "");
}

// The differential: one row per cell type, from the session summary (counts, % of the classified
// cells, Wilson 95 % CI), else from the daemon's running counts; the model's types not seen yet show 0.
function cellTypes(status) {
  const s = status.summary, model = status.model || {};
  let rows = [], unclassified = 0;
  if (s && s.cell_types && Array.isArray(s.cell_types.types)) {
    rows = s.cell_types.types.map((t) => ({ type: t.type, count: t.count, pct: t.pct, ci: t.ci95_pct }));
    unclassified = num(s.cell_types.unclassified && s.cell_types.unclassified.count) ?? 0;
  } else {
    const by = (status.counts || {}).cell_types || {};
    unclassified = num(by.unclassified) ?? 0;
    const types = Object.keys(by).filter((k) => k !== "unclassified" && num(by[k]));
    const classified = types.reduce((n, k) => n + by[k], 0);
    rows = types.map((k) => ({ type: k, count: by[k], pct: 100 * by[k] / classified, ci: wilson(by[k], classified) }));
  }
  const seen = new Set(rows.map((r) => r.type));
  const classes = Array.isArray(model.classes) ? model.classes : [];
  const zero = classes.filter((c) => !seen.has(c)).map((c) => ({ type: c, count: 0, pct: null, ci: null }));
  const order = (r) => { const i = classes.indexOf(r.type); return i < 0 ? classes.length : i; };
  rows = rows.concat(zero).sort((a, b) => order(a) - order(b));
  const blast = new Set(Array.isArray(model.blast_classes) ? model.blast_classes : []);
  return { rows, unclassified, blast };
}

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function showCellTypes(d) {
  const body = $("types-body");
  if (!body) return;
  body.replaceChildren();
  if (!d.rows.length) {
    const td = cell("no cells counted yet");
    td.colSpan = 4;
    td.className = "muted";
    const tr = document.createElement("tr");
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const r of d.rows) {
    const tr = document.createElement("tr");
    tr.dataset.type = r.type;
    if (d.blast.has(r.type)) tr.className = "blast";
    tr.append(cell(r.type.replace(/_/g, " ")), cell(String(r.count)),
      cell(r.pct == null ? "\u2013" : r.pct.toFixed(1) + " %"),
      cell(r.ci ? r.ci[0].toFixed(1) + "\u2013" + r.ci[1].toFixed(1) + " %" : "\u2013"));
    body.appendChild(tr);
  }
  setText("unclassified", String(d.unclassified));
}

function pair(fps, key, index) {
  if (!fps) return null;
  if (Array.isArray(fps)) return num(fps[index]);
  return num(fps[key]);
}

function showFacts(status) {
  const cap = pair(status.fps, "capture", 0), proc = pair(status.fps, "processed", 1);
  setText("fps-capture", cap == null ? "\u2013" : cap.toFixed(1));
  setText("fps-processed", proc == null ? "\u2013" : proc.toFixed(1));
  const cam = status.camera || {};
  setText("camera", (cam.state || "\u2013") + (cam.reconnects ? " (" + cam.reconnects + " reconnects)" : ""));
  const st = status.storage || status.health || {};
  setText("crops", st.crops_mode === undefined ? "\u2013" : st.crops_saving ? "saving" : "off");
  $("crops").title = st.crops_reason || "";
  const m = status.model || {};
  setText("model", (m.name || "?") + " " + (m.sha256 ? m.sha256.slice(0, 12) : ""));
  const up = num(status.uptime_s);
  setText("uptime", up == null ? "\u2013" : formatDuration(up));
  if (status.notice) setText("notice", status.notice);
  showSaving(status.health || {});
}

// A red line while counted cells cannot be saved (and, with a full backlog, are not counted).
function showSaving(h) {
  const el = $("saving");
  const problem = h.saving === false || h.counting === false;
  el.hidden = !problem;
  if (!problem) return;
  const head = h.counting === false ? "Not saving, not counting" : "Not saving";
  el.textContent = head + " \u2013 " + (num(h.store_backlog) || 0) + " waiting to be saved. " + (h.reason || "");
}

function formatDuration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + sec + " s";
}

function setHealth(text, cls) {
  const el = $("health");
  el.textContent = text;
  el.className = "badge " + cls;
}

async function poll() {
  try {
    const [res, health] = await Promise.all([
      fetch("/api/status", { cache: "no-store" }),
      fetch("/healthz", { cache: "no-store" }),
    ]);
    if (!res.ok) throw new Error("status " + res.status);
    const status = await res.json();
    showTallies(tallies(status));
    showCellTypes(cellTypes(status));
    showFacts(status);
    setHealth(health.ok ? "healthy" : "unhealthy", health.ok ? "ok" : "bad");
    setText("updated", new Date().toLocaleTimeString());
  } catch (err) {
    setHealth("daemon unreachable", "bad");
  }
}

function watchStream() {
  const img = $("stream"), placeholder = $("nostream");
  img.addEventListener("load", () => { placeholder.hidden = true; });
  img.addEventListener("error", () => {
    placeholder.hidden = false;
    placeholder.textContent = "stream unavailable; retrying\u2026";
    setTimeout(() => { img.src = "/stream.mjpeg?" + Date.now(); }, 3000);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  watchStream();
  poll();
  setInterval(poll, 1000);
});
