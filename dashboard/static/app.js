// moesweep dashboard: plain JavaScript, no build step. State comes from the JSON API once (a
// snapshot) and then from the sweep's Server-Sent Events; events are merged so that an older one
// never undoes a newer state (the stream replays from seq 0, which may predate the snapshot).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const TERMINAL_TRIAL = new Set(["TRIAL_SUCCEEDED", "TRIAL_FAILED", "TRIAL_CANCELLED", "TRIAL_PRUNED"]);
const TERMINAL_SWEEP = new Set(["SWEEP_SUCCEEDED", "SWEEP_FAILED", "SWEEP_CANCELLED"]);
const STAGE_COLORS = ["#7f8c8d", "#2f6fdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#d35400", "#2c3e50"];
const short = (state) => String(state || "").replace(/^(SWEEP|TRIAL|STAGE)_/, "");
const badge = (state) => `<span class="badge ${esc(short(state))}">${esc(short(state).toLowerCase())}</span>`;

function fmt(v, digits = 4) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v !== "number") return String(v);
  if (!isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}
function fmtAge(seconds) {
  if (!seconds || seconds < 0) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}
const nowS = () => Date.now() / 1000;
function pointText(p) {
  if (!p || typeof p !== "object") return String(p ?? "");
  const keys = Object.keys(p);
  return keys.length ? keys.map((k) => `${k}=${typeof p[k] === "string" ? p[k] : fmt(p[k])}`).join(" ") : "(base)";
}

// ---------------------------------------------------------------------------------------------
// Banner and fetch
// ---------------------------------------------------------------------------------------------
const banners = new Map();  // key -> {text, error}
function setBanner(key, text, error = false) {
  if (text) banners.set(key, { text, error }); else banners.delete(key);
  const el = $("#banner");
  const list = [...banners.values()];
  el.hidden = list.length === 0;
  el.className = "banner" + (list.some((b) => b.error) ? " error" : "");
  el.textContent = list.map((b) => b.text).join("  ·  ");
}

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}
async function api(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Accept: "application/json" } });
  } catch (e) {
    setBanner("dashboard", "The dashboard server cannot be reached; reconnecting…", true);
    throw new HttpError(0, null);
  }
  setBanner("dashboard", null);
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    if (body && body.coordinator_unreachable) setBanner("coordinator", `Coordinator unreachable: ${body.error.message}`, true);
    throw new HttpError(res.status, body);
  }
  setBanner("coordinator", null);
  return body;
}

// ---------------------------------------------------------------------------------------------
// The sweep model: snapshot + events
// ---------------------------------------------------------------------------------------------
function trialRank(t) {
  const attempt = t.attempt || 0;
  let r = 0;
  if (TERMINAL_TRIAL.has(t.state)) r = 3;
  else if (t.state === "TRIAL_RUNNING") r = 1;
  else if (t.state === "TRIAL_PENDING") r = attempt > 0 ? 2 : 0;  // Requeued after attempt `attempt`.
  return attempt * 10 + r;
}
const stageRank = (s) => ({ STAGE_WAITING: 0, STAGE_RUNNING: 1 }[s.state] ?? (s.state ? 2 : 0));

class SweepModel {
  constructor(id) {
    this.id = id;
    this.sweep = null;
    this.stages = new Map();   // stage -> StageResult
    this.trials = new Map();   // trial_id -> Trial
    this.history = new Map();  // trial_id -> Map(step -> metrics), from TRIAL_PROGRESS events
    this.lastSeq = 0;
    this.listeners = new Set();
    this.source = null;
    this.freshIds = new Map();  // trial_id -> when it finished while the page was open (highlighted).
    this.caughtUp = false;
    this.closed = false;
    this.filling = new Set();  // Stages whose trials were fetched to fill in what events leave out.
  }

  async load() {
    const detail = await api(`/api/sweeps/${this.id}`);
    this.sweep = detail.sweep;
    for (const s of detail.stages || []) this.stages.set(s.stage, s);
    let token = "";
    do {
      const page = await api(`/api/sweeps/${this.id}/trials?limit=5000${token ? "&page_token=" + encodeURIComponent(token) : ""}`);
      for (const t of page.trials || []) this.mergeTrial(t);
      token = page.next_page_token || "";
    } while (token);
    this.connect();
  }

  connect() {
    // after_seq=0: the history of per-epoch reports (curves) only exists as events. A reconnect by
    // the browser sends Last-Event-ID, which the server prefers: no gap and no duplicate.
    const es = new EventSource(`/api/sweeps/${this.id}/events?after_seq=${this.lastSeq}`);
    this.source = es;
    es.addEventListener("open", () => { setBanner("dashboard", null); this.setLive(true); });
    es.addEventListener("sweep", (m) => {
      const ev = JSON.parse(m.data);
      if (ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
      if (this.apply(ev)) this.changed();
    });
    es.addEventListener("upstream", (m) => {
      const u = JSON.parse(m.data);
      if (u.ok) setBanner("coordinator", null);
      else setBanner("coordinator", `Coordinator unreachable (${u.message}); reconnecting from event ${u.after_seq}…`, true);
    });
    es.addEventListener("end", () => { es.close(); this.caughtUp = true; this.setLive(false, "finished"); this.changed(); });
    es.addEventListener("notfound", () => { es.close(); this.setLive(false); });
    es.addEventListener("failure", (m) => { es.close(); this.setLive(false); setBanner("stream", "Live updates stopped: " + JSON.parse(m.data).message, true); });
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED || this.closed) return;
      // The browser reconnects by itself (retry: 2000), sending Last-Event-ID.
      this.setLive(false);
      setBanner("dashboard", "Lost the connection to the dashboard; reconnecting…", true);
    });
  }

  setLive(on, text) {
    const el = $("#live");
    el.className = "live" + (on ? " on" : "");
    el.textContent = on ? "live" : text || "offline";
  }

  close() {
    this.closed = true;
    if (this.source) this.source.close();
  }

  mergeTrial(t) {
    const old = this.trials.get(t.trial_id);
    if (old && trialRank(t) < trialRank(old)) return false;
    if (old && trialRank(t) === trialRank(old) && TERMINAL_TRIAL.has(old.state)) return false;
    // An event's trial may leave fields at their defaults (no config, times 0): keep what is known.
    const merged = Object.assign({}, old);
    for (const [k, v] of Object.entries(t)) {
      const empty = v === "" || v === 0 || v === null || v === undefined ||
        (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
      if (!empty || !old || k === "error" || k === "state") merged[k] = v;
    }
    this.trials.set(t.trial_id, merged);
    if (!merged.config_json) this.fillStage(merged.stage);
    return true;
  }

  // Events carry a trial without its config and times: a trial first seen in an event (its stage
  // started after the snapshot) is filled in from ListTrials of its stage, once per stage.
  fillStage(stage) {
    if (this.filling.has(stage)) return;
    this.filling.add(stage);
    setTimeout(async () => {
      try {
        let token = "";
        do {
          const page = await api(`/api/sweeps/${this.id}/trials?stage=${stage}&limit=5000${token ? "&page_token=" + encodeURIComponent(token) : ""}`);
          for (const t of page.trials || []) {
            this.mergeTrial(t);
            const known = this.trials.get(t.trial_id);
            for (const k of ["config_json", "created_at", "started_at", "finished_at"]) if (!known[k] && t[k]) known[k] = t[k];
          }
          token = page.next_page_token || "";
        } while (token);
        this.changed();
      } catch (e) {
        this.filling.delete(stage);  // Try again with the next event of the stage.
      }
    }, 100);
  }

  // Applies one event; true when what the current view shows may have changed.
  apply(ev) {
    switch (ev.type) {
      case "SWEEP_SUBMITTED":
        if (this.sweep) return false;
        this.sweep = ev.sweep;
        return true;
      case "SWEEP_FINISHED":
        this.sweep = Object.assign({}, this.sweep, ev.sweep);
        return true;
      case "STAGE_EXTENDED": {
        const old = this.stages.get(ev.stage.stage);
        if (!old) return false;
        this.stages.set(ev.stage.stage, Object.assign({}, old, { trials_total: ev.stage.trials_total }));
        return true;
      }
      case "STAGE_STARTED":
      case "STAGE_DECIDED": {
        const old = this.stages.get(ev.stage.stage);
        if (ev.type === "STAGE_STARTED" && this.sweep && ev.stage.stage > (this.sweep.current_stage || 0)) this.sweep.current_stage = ev.stage.stage;
        if (old && stageRank(ev.stage) < stageRank(old)) return false;
        if (old && stageRank(old) === 2 && stageRank(ev.stage) === 2) return false;
        this.stages.set(ev.stage.stage, Object.assign({}, old, ev.stage));
        return true;
      }
      case "TRIAL_PROGRESS": {
        let h = this.history.get(ev.trial.trial_id);
        if (!h) this.history.set(ev.trial.trial_id, (h = new Map()));
        h.set(ev.step, ev.trial.metrics);
        const merged = this.mergeTrial(ev.trial);
        const view = parseRoute(location.pathname).view;
        return merged || view === "curves" || view === "trial";
      }
      case "TRIAL_STARTED":
        if (!(this.trials.get(ev.trial.trial_id) || {}).started_at) ev.trial.started_at = ev.time;
        return this.mergeTrial(ev.trial);
      case "TRIAL_FINISHED": {
        ev.trial.finished_at = ev.time;
        const merged = this.mergeTrial(ev.trial);
        if (merged && this.caughtUpish()) this.freshIds.set(ev.trial.trial_id, Date.now());
        return merged;
      }
      default:
        return ev.trial ? this.mergeTrial(ev.trial) : false;
    }
  }
  caughtUpish() { return this.sweep && !TERMINAL_SWEEP.has(this.sweep.state); }

  changed() { for (const fn of this.listeners) fn(); }

  // Derived views ---------------------------------------------------------------------------
  get metric() { return this.sweep ? this.sweep.objective_metric : ""; }
  get maximize() { return !this.sweep || this.sweep.objective_goal !== "minimize"; }
  objective(t) { const v = t.metrics ? t.metrics[this.metric] : undefined; return typeof v === "number" ? v : undefined; }
  stageName(n) {
    const s = this.stages.get(n);
    if (n === 0 && this.sweep && this.sweep.has_baseline) return "baseline";
    return s && s.name ? s.name : `stage ${n}`;
  }
  stageNumbers() {
    const set = new Set([...this.stages.keys()]);
    for (const t of this.trials.values()) set.add(t.stage);
    return [...set].sort((a, b) => a - b);
  }
  trialsOf(stage) { return [...this.trials.values()].filter((t) => t.stage === stage); }
  counts(stage) {
    const c = { total: 0, done: 0, failed: 0, running: 0 };
    for (const t of this.trials.values()) {
      if (stage !== undefined && t.stage !== stage) continue;
      c.total++;
      if (TERMINAL_TRIAL.has(t.state)) c.done++;
      if (t.state === "TRIAL_FAILED") c.failed++;
      if (t.state === "TRIAL_RUNNING") c.running++;
    }
    return c;
  }
  // Mean and sample std of the objective per grid point of `stage`, over its succeeded seeds.
  points(stage) {
    const by = new Map();
    for (const t of this.trials.values()) {
      if (t.stage !== stage) continue;
      let p = by.get(t.point_index);
      if (!p) by.set(t.point_index, (p = { point_index: t.point_index, point: t.point_json, values: [], config: t.config_json }));
      const v = this.objective(t);
      if (t.state === "TRIAL_SUCCEEDED" && v !== undefined) p.values.push(v);
    }
    const out = [...by.values()].sort((a, b) => a.point_index - b.point_index);
    for (const p of out) {
      const n = p.values.length;
      p.n = n;
      p.mean = n ? p.values.reduce((a, b) => a + b, 0) / n : undefined;
      p.std = n > 1 ? Math.sqrt(p.values.reduce((a, b) => a + (b - p.mean) ** 2, 0) / (n - 1)) : 0;
    }
    return out;
  }
  baselineMean() {
    for (const s of this.stages.values()) if (s.has_baseline) return s.baseline_mean;
    if (this.sweep && this.sweep.has_baseline) {
      const p = this.points(0).filter((x) => x.n > 0);
      if (p.length) return p[0].mean;
    }
    return undefined;
  }
  best() {
    let best;
    for (const t of this.trials.values()) {
      const v = this.objective(t);
      if (t.state !== "TRIAL_SUCCEEDED" || v === undefined) continue;
      if (best === undefined || (this.maximize ? v > best : v < best)) best = v;
    }
    return best;
  }
}

// ---------------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------------
const charts = new Map();  // element id -> echarts instance
function chart(id, option) {
  const el = document.getElementById(id);
  if (!el) return;
  let c = charts.get(id);
  if (c && c.getDom() !== el) { c.dispose(); c = null; }
  if (!c) { c = echarts.init(el, null, { renderer: "canvas" }); charts.set(id, c); }
  c.setOption(Object.assign({ animation: false }, option), { notMerge: true });
}
function disposeCharts() { for (const c of charts.values()) c.dispose(); charts.clear(); }
window.addEventListener("resize", () => { for (const c of charts.values()) c.resize(); });

// A point's mean with a ± std error bar, and the baseline as a line.
function pointsChartOption(model, stage) {
  const pts = model.points(stage).filter((p) => p.n > 0);
  const labels = pts.map((p) => pointText(p.point));
  const base = model.baselineMean();
  const errorBars = {
    type: "custom", name: "± std", data: pts.map((p, i) => [i, p.mean - p.std, p.mean + p.std]),
    renderItem: (params, api) => {
      const lo = api.coord([api.value(0), api.value(1)]);
      const hi = api.coord([api.value(0), api.value(2)]);
      const w = 6;
      const style = { stroke: "#555", lineWidth: 1.2 };
      return { type: "group", children: [
        { type: "line", shape: { x1: lo[0], y1: lo[1], x2: hi[0], y2: hi[1] }, style },
        { type: "line", shape: { x1: lo[0] - w, y1: lo[1], x2: lo[0] + w, y2: lo[1] }, style },
        { type: "line", shape: { x1: hi[0] - w, y1: hi[1], x2: hi[0] + w, y2: hi[1] }, style }] };
    }, z: 1,
  };
  const mean = {
    type: "scatter", name: "mean", symbolSize: 9, data: pts.map((p) => p.mean), itemStyle: { color: STAGE_COLORS[stage % STAGE_COLORS.length] }, z: 2,
    markLine: base === undefined || stage === 0 ? undefined : { symbol: "none", silent: true, lineStyle: { type: "dashed", color: "#999" },
      label: { formatter: "baseline", position: "insideEndTop" }, data: [{ yAxis: base }] },
  };
  const values = pts.flatMap((p) => [p.mean - p.std, p.mean + p.std]).concat(base === undefined || stage === 0 ? [] : [base]);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.01 || 0.01;
  return {
    grid: { left: 50, right: 12, top: 16, bottom: 56 },
    tooltip: { trigger: "item", formatter: (p) => { const q = pts[p.dataIndex]; return q ? `${esc(labels[p.dataIndex])}<br>${esc(model.metric)} ${fmt(q.mean)} ± ${fmt(q.std)} (n=${q.n})` : ""; } },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: labels.length > 4 ? 30 : 0, fontSize: 10, hideOverlap: true } },
    yAxis: { type: "value", scale: true, name: model.metric, nameTextStyle: { fontSize: 10 },
             min: values.length ? lo - pad : null, max: values.length ? hi + pad : null, axisLabel: { formatter: (v) => fmt(v, 5) } },
    series: [errorBars, mean],
  };
}

function parallelOption(model) {
  const keys = new Set();
  for (const t of model.trials.values()) for (const k of Object.keys(t.point_json || {})) keys.add(k);
  const dims = [...keys];
  const axes = dims.map((k, i) => {
    const vals = [...new Set([...model.trials.values()].map((t) => (t.config_json || {})[k]).filter((v) => v !== undefined))];
    const numeric = vals.every((v) => typeof v === "number");
    return numeric ? { dim: i, name: k } : { dim: i, name: k, type: "category", data: vals.map(String) };
  });
  axes.push({ dim: dims.length, name: model.metric, scale: true });
  const byStage = new Map();
  for (const t of model.trials.values()) {
    const v = model.objective(t);
    if (t.state !== "TRIAL_SUCCEEDED" || v === undefined) continue;
    const row = dims.map((k, i) => { const x = (t.config_json || {})[k]; return axes[i].type === "category" ? String(x) : x; });
    row.push(v);
    if (!byStage.has(t.stage)) byStage.set(t.stage, []);
    byStage.get(t.stage).push(row);
  }
  const series = [...byStage.keys()].sort((a, b) => a - b).map((s) => ({
    type: "parallel", name: model.stageName(s), data: byStage.get(s), lineStyle: { width: 1, opacity: 0.45, color: STAGE_COLORS[s % STAGE_COLORS.length] },
    progressive: 1000, smooth: false,
  }));
  return {
    legend: { top: 0, type: "scroll" },
    parallel: { left: 50, right: 70, top: 50, bottom: 24 },
    parallelAxis: axes.map((a) => Object.assign({ nameTextStyle: { fontSize: 10 }, axisLabel: { fontSize: 10 } }, a)),
    series: series.length ? series : [{ type: "parallel", data: [] }],
  };
}

function curveOption(model, trials, kind) {
  const series = [];
  const names = kind === "loss" ? ["train_loss", "val_loss"] : ["val_accuracy"];
  for (const t of trials) {
    const h = model.history.get(t.trial_id);
    if (!h) continue;
    const steps = [...h.keys()].sort((a, b) => a - b);
    for (const m of names) {
      const data = steps.filter((s) => typeof h.get(s)[m] === "number").map((s) => [s, h.get(s)[m]]);
      if (!data.length) continue;
      series.push({ type: "line", name: `#${t.trial_id} ${m}`, data, showSymbol: data.length < 20, symbolSize: 4,
                    lineStyle: { width: 1.3, type: m === "val_loss" ? "dashed" : "solid" },
                    color: STAGE_COLORS[(t.point_index + 1) % STAGE_COLORS.length] });
    }
  }
  return {
    grid: { left: 50, right: 12, top: 24, bottom: 30 },
    title: series.length ? undefined : { text: "no per-epoch reports yet", left: "center", top: "middle", textStyle: { fontSize: 12, color: "#999" } },
    tooltip: { trigger: "axis" },
    xAxis: { type: "value", name: "epoch", minInterval: 1 },
    yAxis: { type: "value", scale: true, name: kind === "loss" ? "loss (solid: train, dashed: val)" : "val_accuracy", nameTextStyle: { fontSize: 10, align: "left" } },
    series,
  };
}

function layerOf(t, layer) {
  const layers = (t.expert_stats && t.expert_stats.layers) || [];
  return layers.find((l) => (l.layer || 0) === layer) || layers[layer];
}

function heatmapOption(model, trials, layer) {
  const rows = trials.filter((t) => layerOf(t, layer) && (layerOf(t, layer).usage || []).length);
  const experts = Math.max(0, ...rows.map((t) => layerOf(t, layer).usage.length));
  const data = [];
  rows.forEach((t, y) => layerOf(t, layer).usage.forEach((u, x) => data.push([x, y, u])));
  const max = Math.max(0.01, ...data.map((d) => d[2]));
  return {
    tooltip: { formatter: (p) => `trial #${rows[p.value[1]].trial_id} expert ${p.value[0]}: usage ${fmt(p.value[2], 3)}` },
    grid: { left: 110, right: 16, top: 10, bottom: 70 },
    title: rows.length ? undefined : { text: "no expert statistics", left: "center", top: "middle", textStyle: { fontSize: 12, color: "#999" } },
    xAxis: { type: "category", name: "expert", data: [...Array(experts).keys()].map(String), splitArea: { show: true } },
    yAxis: { type: "category", data: rows.map((t) => `#${t.trial_id} ${pointText(t.point_json)}`.slice(0, 22)), axisLabel: { fontSize: 9 } },
    visualMap: { min: 0, max, precision: 2, calculable: true, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120, textStyle: { fontSize: 10 } },
    series: [{ type: "heatmap", data, progressive: 2000 }],
  };
}

function expertPointsOption(model, stage, layer) {
  const pts = model.points(stage);
  const byPoint = new Map();  // point_index -> that layer's stats of each seed
  for (const t of model.trialsOf(stage)) {
    const l = layerOf(t, layer);
    if (!l) continue;
    if (!byPoint.has(t.point_index)) byPoint.set(t.point_index, []);
    byPoint.get(t.point_index).push(l);
  }
  const stat = (p, key) => {
    const vals = (byPoint.get(p.point_index) || []).map((l) => l[key] || 0);
    return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
  };
  const labels = pts.map((p) => pointText(p.point));
  const keys = ["load_cv", "activation_rate", "router_entropy"];
  return {
    legend: { top: 0 }, tooltip: { trigger: "axis" },
    grid: { left: 46, right: 12, top: 30, bottom: 56 },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: labels.length > 4 ? 30 : 0, fontSize: 10, hideOverlap: true } },
    yAxis: { type: "value" },
    series: keys.map((k) => ({ type: "bar", name: k, data: pts.map((p) => stat(p, k)) })),
  };
}

function usageBarsOption(layer) {
  const n = Math.max((layer.usage || []).length, (layer.importance || []).length);
  return {
    legend: { top: 0 }, tooltip: { trigger: "axis" },
    grid: { left: 46, right: 12, top: 30, bottom: 24 },
    xAxis: { type: "category", data: [...Array(n).keys()].map((e) => `e${e}`) },
    yAxis: { type: "value" },
    series: [{ type: "bar", name: "usage", data: layer.usage || [] }, { type: "bar", name: "importance", data: layer.importance || [] }],
  };
}

// Which classes each expert receives (class_routing: num_classes rows of the experts' shares).
function classRoutingOption(layer) {
  const classes = layer.num_classes || 0, values = layer.class_routing || [];
  const experts = classes ? values.length / classes : 0;
  const data = values.map((v, i) => [i % experts, Math.floor(i / experts), v]);
  return {
    tooltip: { formatter: (p) => `class ${p.value[1]} → expert ${p.value[0]}: ${fmt(p.value[2], 3)} of its slots` },
    grid: { left: 56, right: 16, top: 10, bottom: 70 },
    xAxis: { type: "category", name: "expert", data: [...Array(experts).keys()].map(String), splitArea: { show: true } },
    yAxis: { type: "category", name: "class", data: [...Array(classes).keys()].map(String), splitArea: { show: true } },
    visualMap: { min: 0, max: 1, precision: 2, calculable: true, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120, textStyle: { fontSize: 10 } },
    series: [{ type: "heatmap", data }],
  };
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------
let current = { model: null, cleanup: null };
let renderPending = false;
let renderDirty = false;

// Events come in bursts (a replay is thousands): render at most ~3 times a second, and less often
// when a render is slow (a big sweep), so the page stays responsive.
function scheduleRender(model) {
  renderDirty = true;
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => {
    renderDirty = false;
    let took = 0;
    if (current.model === model) {
      const started = performance.now();
      const active = document.activeElement && document.activeElement.id === "filter";
      renderSweepView(parseRoute(location.pathname), model);
      if (active && $("#filter")) { const i = $("#filter"); i.focus(); i.setSelectionRange(i.value.length, i.value.length); }
      took = performance.now() - started;
    }
    setTimeout(() => { renderPending = false; if (renderDirty) scheduleRender(model); }, Math.max(0, 3 * took - 300));
  }, 300);
}

function crumbs(parts) {
  $("#crumbs").innerHTML = parts.map(([text, href]) => (href ? `<a href="${href}" data-link>${esc(text)}</a>` : esc(text))).join(" / ");
}

function notFound(what) {
  crumbs([["not found"]]);
  document.title = "Not found · moesweep";
  $("#view").innerHTML = `<div class="notfound"><h1>404</h1><p>${esc(what)}</p><p><a href="/" data-link>All sweeps</a></p></div>`;
}

function failed(e) {
  $("#view").innerHTML = `<div class="notfound"><p>${esc(e.message)}</p><p><button onclick="location.reload()">Retry</button></p></div>`;
}

async function viewSweeps() {
  crumbs([["sweeps"]]);
  document.title = "Sweeps · moesweep";
  $("#live").className = "live"; $("#live").textContent = "";
  const data = await api("/api/sweeps?limit=200");
  const sweeps = data.sweeps || [];
  const rows = sweeps.map((s) => {
    const done = s.trials_total ? (100 * s.trials_done) / s.trials_total : 0;
    const failedPct = s.trials_total ? (100 * s.trials_failed) / s.trials_total : 0;
    const stage = s.num_stages ? `${s.current_stage}/${s.num_stages}` : "–";
    return `<tr data-id="${s.sweep_id}"><td class="num">${s.sweep_id}</td><td><a href="/sweeps/${s.sweep_id}" data-link>${esc(s.name)}</a></td>
      <td>${badge(s.state)}</td><td>stage ${stage}<div class="bar" title="${s.trials_done}/${s.trials_total} trials"><span style="width:${done - failedPct}%"></span><span class="failed" style="width:${failedPct}%"></span></div></td>
      <td class="hide-narrow">${s.objective_goal === "minimize" ? "min" : "max"} ${esc(s.objective_metric)}</td>
      <td class="num best">…</td><td class="num">${s.trials_done}/${s.trials_total}</td><td class="hide-narrow">${fmtAge(nowS() - s.created_at)}</td></tr>`;
  }).join("");
  $("#view").innerHTML = `<div class="row"><h1>Sweeps</h1><button id="refresh">Refresh</button></div>
    <p class="muted">The coordinator has no all-sweeps watch; open a sweep for live updates.</p>
    ${sweeps.length ? `<div class="table-wrap"><table id="sweeps"><thead><tr><th>id</th><th>name</th><th>state</th><th>progress</th><th class="hide-narrow">objective</th><th>best so far</th><th>trials</th><th class="hide-narrow">age</th></tr></thead><tbody>${rows}</tbody></table></div>`
      : `<p class="muted">No sweeps yet. Submit one with <code>moesweep submit SPEC.json</code>.</p>`}`;
  $("#refresh").onclick = () => route();
  // Best so far: the best point mean of any stage (GetSweep per sweep, a few at a time).
  const queue = sweeps.slice(0, 50);
  const worker = async () => {
    for (let s; (s = queue.shift()); ) {
      const cell = document.querySelector(`tr[data-id="${s.sweep_id}"] .best`);
      try {
        const d = await api(`/api/sweeps/${s.sweep_id}`);
        let best;
        for (const st of d.stages || []) for (const p of st.points || []) {
          if (!p.n) continue;
          if (best === undefined || (s.objective_goal === "minimize" ? p.mean < best : p.mean > best)) best = p.mean;
        }
        if (cell) cell.textContent = fmt(best);
      } catch (e) { if (cell) cell.textContent = "?"; }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

function sweepHeader(model, tab) {
  const s = model.sweep;
  const c = model.counts();
  const base = `/sweeps/${model.id}`;
  const tabs = [["Overview", base, "overview"], ["Curves", base + "/curves", "curves"], ["Experts", base + "/experts", "experts"]];
  return `<div class="row"><h1>${esc(s.name)}</h1>${badge(s.state)}<span class="muted">sweep ${s.sweep_id} · ${s.objective_goal === "minimize" ? "minimize" : "maximize"} ${esc(s.objective_metric)} ·
    ${c.done}/${c.total} trials done, ${c.failed} failed, ${c.running} running · best ${fmt(model.best())} · ${fmtAge(nowS() - s.created_at)} old</span></div>
    ${s.error ? `<pre class="err">${esc(s.error)}</pre>` : ""}
    <div class="tabs">${tabs.map(([t, h, k]) => `<a href="${h}" data-link class="${k === tab ? "active" : ""}">${t}</a>`).join("")}</div>`;
}

function stageCard(model, n) {
  const st = model.stages.get(n) || { stage: n, state: "STAGE_WAITING" };
  const c = model.counts(n);
  const total = Math.max(c.total, st.trials_total || 0);
  const ok = total ? (100 * (c.done - c.failed)) / total : 0;
  const bad = total ? (100 * c.failed) / total : 0;
  const w = st.winner && st.state === "STAGE_SUCCEEDED" ? st.winner : null;
  const delta = w && st.has_baseline && n !== 0 ? `${st.delta_to_baseline >= 0 ? "+" : ""}${fmt(st.delta_to_baseline)}` : "–";
  return `<div class="card" data-stage="${n}"><h3><span>${n === 0 && model.sweep.has_baseline ? "baseline" : `${n}. ${esc(model.stageName(n))}`}</span>${badge(st.state)}</h3>
    <div class="bar" title="${c.done}/${total} done"><span style="width:${ok}%"></span><span class="failed" style="width:${bad}%"></span></div>
    <dl class="kv"><dt>trials</dt><dd>${c.done}/${total} done, ${c.failed} failed, ${c.running} running</dd>
    <dt>winner</dt><dd>${w ? esc(pointText(w.point_json)) : "–"}</dd>
    <dt>mean ± std</dt><dd>${w ? `${fmt(w.mean)} ± ${fmt(w.std)} (n=${w.n})` : "–"}</dd>
    <dt>vs baseline</dt><dd>${delta}</dd>${st.error ? `<dt>error</dt><dd class="err">${esc(st.error)}</dd>` : ""}</dl>
    <div class="chart" id="stage-chart-${n}"></div></div>`;
}

const tableState = { sort: "trial_id", dir: 1, filter: "", state: "", page: 0 };
const PAGE = 200;
function trialTable(model) {
  const f = tableState.filter.toLowerCase();
  let rows = [...model.trials.values()].filter((t) => (!tableState.state || t.state === tableState.state) &&
    (!f || `${t.trial_id} ${model.stageName(t.stage)} ${pointText(t.point_json)} ${t.seed} ${t.worker} ${t.error}`.toLowerCase().includes(f)));
  const key = tableState.sort;
  const val = (t) => key === "objective" ? model.objective(t) : key === "duration" ? (t.finished_at && t.started_at ? t.finished_at - t.started_at : undefined)
    : key === "point" ? pointText(t.point_json) : t[key];
  rows.sort((a, b) => {
    const x = val(a), y = val(b);
    if (x === y) return a.trial_id - b.trial_id;
    if (x === undefined) return 1;
    if (y === undefined) return -1;
    return (x < y ? -1 : 1) * tableState.dir;
  });
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  tableState.page = Math.min(tableState.page, pages - 1);
  const shown = rows.slice(tableState.page * PAGE, (tableState.page + 1) * PAGE);
  const cols = [["trial_id", "id"], ["stage", "stage"], ["point", "point"], ["seed", "seed"], ["state", "state"], ["objective", model.metric], ["worker", "worker", "hide-narrow"], ["duration", "time", "hide-narrow"], ["error", "error", "hide-narrow"]];
  const head = cols.map(([k, label, cls]) => `<th data-sort="${k}" class="${cls || ""} ${k === key ? (tableState.dir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(label)}</th>`).join("");
  const body = shown.map((t) => `<tr data-trial="${t.trial_id}" class="${Date.now() - (model.freshIds.get(t.trial_id) || 0) < 1500 ? "new" : ""}">
    <td class="num"><a href="/sweeps/${model.id}/trials/${t.trial_id}" data-link>${t.trial_id}</a></td><td>${esc(model.stageName(t.stage))}</td>
    <td>${esc(pointText(t.point_json))}</td><td class="num">${t.seed}</td><td>${badge(t.state)}</td><td class="num">${fmt(model.objective(t))}</td>
    <td class="hide-narrow">${t.reused_trial_id ? `reused #${t.reused_trial_id}` : esc(t.worker)}</td><td class="num hide-narrow">${t.finished_at && t.started_at ? fmtAge(t.finished_at - t.started_at) : "–"}</td>
    <td class="err hide-narrow" title="${esc(t.error)}">${esc((t.error || "").split("\n")[0])}</td></tr>`).join("");
  return `<div class="row"><h2>Trials</h2><input id="filter" placeholder="filter: point, seed, worker, error…" value="${esc(tableState.filter)}">
    <select id="state-filter"><option value="">any state</option>${["TRIAL_PENDING", "TRIAL_RUNNING", "TRIAL_SUCCEEDED", "TRIAL_FAILED", "TRIAL_CANCELLED", "TRIAL_PRUNED"].map((s) => `<option value="${s}" ${s === tableState.state ? "selected" : ""}>${short(s).toLowerCase()}</option>`).join("")}</select>
    <span class="muted">${rows.length} trials${pages > 1 ? ` · page <button id="prev">‹</button> ${tableState.page + 1}/${pages} <button id="next">›</button>` : ""}</span></div>
    <div class="table-wrap"><table id="trials"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}
function bindTable(model, rerender) {
  const input = $("#filter");
  if (input) input.oninput = () => { tableState.filter = input.value; tableState.page = 0; rerender(true); };
  const sel = $("#state-filter");
  if (sel) sel.onchange = () => { tableState.state = sel.value; tableState.page = 0; rerender(); };
  for (const th of document.querySelectorAll("#trials th")) th.onclick = () => {
    const k = th.dataset.sort;
    tableState.dir = tableState.sort === k ? -tableState.dir : 1;
    tableState.sort = k;
    rerender();
  };
  if ($("#prev")) $("#prev").onclick = () => { tableState.page = Math.max(0, tableState.page - 1); rerender(); };
  if ($("#next")) $("#next").onclick = () => { tableState.page++; rerender(); };
}

function renderOverview(model) {
  const stages = model.stageNumbers();
  const render = (keepFocus) => {
    $("#table-slot").innerHTML = trialTable(model);
    bindTable(model, render);
    if (keepFocus === true) { const i = $("#filter"); i.focus(); i.setSelectionRange(i.value.length, i.value.length); }
  };
  $("#view").innerHTML = sweepHeader(model, "overview") +
    `<div class="cards">${stages.map((n) => stageCard(model, n)).join("")}</div>
     <h2>All trials: parameters → ${esc(model.metric)}</h2><div class="card"><div class="chart tall" id="parallel-chart"></div></div>
     <div id="table-slot"></div>`;
  for (const n of stages) chart(`stage-chart-${n}`, pointsChartOption(model, n));
  chart("parallel-chart", parallelOption(model));
  render();
}

function stagePicker(model, selected) {
  return `<label>stage <select id="stage-pick">${model.stageNumbers().map((n) => `<option value="${n}" ${n === selected ? "selected" : ""}>${n}. ${esc(model.stageName(n))}</option>`).join("")}</select></label>`;
}
function pickedStage(model) {
  const q = new URLSearchParams(location.search).get("stage");
  const stages = model.stageNumbers();
  if (q !== null && stages.includes(Number(q))) return Number(q);
  return model.sweep.current_stage ?? stages[stages.length - 1] ?? 0;
}
function bindStagePicker() {
  const sel = $("#stage-pick");
  if (sel) sel.onchange = () => navigate(`${location.pathname}?stage=${sel.value}`);
}

function renderCurves(model) {
  const stage = pickedStage(model);
  const trials = model.trialsOf(stage).slice(0, 60);
  const withHistory = trials.filter((t) => model.history.has(t.trial_id)).length;
  $("#view").innerHTML = sweepHeader(model, "curves") +
    `<div class="row">${stagePicker(model, stage)}<span class="muted">${withHistory} of ${model.trialsOf(stage).length} trials have per-epoch reports${trials.length < model.trialsOf(stage).length ? " (first 60 shown)" : ""}</span></div>
     <div class="grid2"><div class="card"><h3>Loss per epoch</h3><div class="chart tall" id="loss-chart"></div></div>
     <div class="card"><h3>Validation accuracy per epoch</h3><div class="chart tall" id="acc-chart"></div></div></div>`;
  bindStagePicker();
  chart("loss-chart", curveOption(model, trials, "loss"));
  chart("acc-chart", curveOption(model, trials, "acc"));
}

function renderExperts(model) {
  const stage = pickedStage(model);
  const trials = model.trialsOf(stage).filter((t) => t.expert_stats && (t.expert_stats.layers || []).length).slice(0, 200);
  const layers = Math.max(1, ...trials.map((t) => t.expert_stats.layers.length));
  const layer = Math.min(Number(new URLSearchParams(location.search).get("layer") || 0), layers - 1);
  $("#view").innerHTML = sweepHeader(model, "experts") +
    `<div class="row">${stagePicker(model, stage)}<label>layer <select id="layer-pick">${[...Array(layers).keys()].map((l) => `<option ${l === layer ? "selected" : ""}>${l}</option>`).join("")}</select></label>
     <span class="muted">${trials.length} trials with expert statistics</span></div>
     <div class="card"><h3>Expert usage (trials × experts)</h3><div class="chart tall" id="heatmap-chart" style="height:${Math.max(300, 60 + trials.length * 14)}px"></div></div>
     <h2>Per grid point (mean over seeds)</h2><div class="card"><div class="chart" id="expert-points-chart"></div></div>`;
  bindStagePicker();
  $("#layer-pick").onchange = (e) => navigate(`${location.pathname}?stage=${stage}&layer=${e.target.value}`);
  chart("heatmap-chart", heatmapOption(model, trials, layer));
  chart("expert-points-chart", expertPointsOption(model, stage, layer));
}

function renderTrial(model, trialId) {
  const t = model.trials.get(trialId);
  if (!t) return notFound(`Sweep ${model.id} has no trial ${trialId}.`);
  crumbs([["sweeps", "/"], [`${model.sweep.name} (${model.id})`, `/sweeps/${model.id}`], [`trial ${trialId}`]]);
  document.title = `Trial ${trialId} · moesweep`;
  const metrics = Object.entries(t.metrics || {}).sort();
  const layers = (t.expert_stats && t.expert_stats.layers) || [];
  const cfg = t.config_json || {};
  $("#view").innerHTML = `<div class="row"><h1>Trial ${t.trial_id}</h1>${badge(t.state)}<span class="muted">${esc(model.stageName(t.stage))} · point ${t.point_index} (${esc(pointText(t.point_json))}) · seed ${t.seed} · attempt ${t.attempt} · ${t.reused_trial_id ? `not run: reused trial <a href="/sweeps/${model.id}/trials/${t.reused_trial_id}" data-link>#${t.reused_trial_id}</a> (same config and seed)` : esc(t.worker || "no worker yet")}</span></div>
    ${t.error ? `<h2>Error</h2><pre class="err" id="trial-error">${esc(t.error)}</pre>` : ""}
    <div class="grid2"><div class="card"><h3>Config</h3><dl class="kv">${Object.keys(cfg).sort().map((k) => `<dt>${esc(k)}</dt><dd>${esc(typeof cfg[k] === "number" ? fmt(cfg[k], 6) : JSON.stringify(cfg[k]))}</dd>`).join("")}</dl></div>
    <div class="card"><h3>${TERMINAL_TRIAL.has(t.state) ? "Final metrics" : "Latest metrics"}</h3><dl class="kv">${metrics.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${fmt(v, 6)}</dd>`).join("") || "<dt>–</dt><dd></dd>"}</dl>
    <dl class="kv"><dt>created</dt><dd>${new Date(t.created_at * 1000).toLocaleString()}</dd><dt>run time</dt><dd>${t.reused_trial_id ? `none (reused #${t.reused_trial_id})` : t.finished_at && t.started_at ? fmtAge(t.finished_at - t.started_at) : "–"}</dd></dl></div></div>
    <h2>Curves</h2><div class="grid2"><div class="card"><div class="chart" id="trial-loss-chart"></div></div><div class="card"><div class="chart" id="trial-acc-chart"></div></div></div>
    <h2>Expert statistics</h2>${layers.length ? `<div class="cards">${layers.map((l, i) => `<div class="card"><h3>layer ${l.layer || 0}</h3>
      <dl class="kv"><dt>load_cv</dt><dd>${fmt(l.load_cv)}</dd><dt>activation rate</dt><dd>${fmt(l.activation_rate)}</dd><dt>router entropy</dt><dd>${fmt(l.router_entropy)}</dd>
      <dt>usage variance</dt><dd>${fmt(l.usage_variance)}</dd><dt>gate weight var.</dt><dd>${fmt(l.gate_weight_variance)}</dd></dl>
      <div class="chart" id="trial-layer-chart-${i}"></div>
      ${(l.class_routing || []).length ? `<h3>classes × experts (share of each class's routed slots)</h3><div class="chart" id="trial-class-chart-${i}"></div>` : ""}</div>`).join("")}</div>` : `<p class="muted">None reported (dense model, or a trainer that reports no expert_stats).</p>`}`;
  chart("trial-loss-chart", curveOption(model, [t], "loss"));
  chart("trial-acc-chart", curveOption(model, [t], "acc"));
  layers.forEach((l, i) => chart(`trial-layer-chart-${i}`, usageBarsOption(l)));
  layers.forEach((l, i) => (l.class_routing || []).length && chart(`trial-class-chart-${i}`, classRoutingOption(l)));
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------
function parseRoute(path) {
  let m;
  if ((m = path.match(/^\/sweeps\/(\d+)\/trials\/(\d+)\/?$/))) return { view: "trial", id: Number(m[1]), trial: Number(m[2]) };
  if ((m = path.match(/^\/sweeps\/(\d+)\/(curves|experts)\/?$/))) return { view: m[2], id: Number(m[1]) };
  if ((m = path.match(/^\/sweeps\/(\d+)\/?$/))) return { view: "overview", id: Number(m[1]) };
  if (path === "/" || path === "") return { view: "sweeps" };
  return { view: "unknown" };
}

function renderSweepView(r, model) {
  if (!model.sweep) return;
  if (r.view !== "trial") crumbs([["sweeps", "/"], [`${model.sweep.name} (${model.id})`]]);
  if (r.view !== "trial") document.title = `${model.sweep.name} · moesweep`;
  // Keep what the user is typing and where they scrolled.
  const y = window.scrollY;
  const started = performance.now();
  if (r.view === "overview") renderOverview(model);
  else if (r.view === "curves") renderCurves(model);
  else if (r.view === "experts") renderExperts(model);
  else if (r.view === "trial") renderTrial(model, r.trial);
  window.scrollTo(0, y);
  window.__moesweep.timings.last_render_ms = Math.round(performance.now() - started);
  window.__moesweep.renders++;
  if (!window.__moesweep.firstRender) window.__moesweep.firstRender = performance.now();
}

async function route() {
  const r = parseRoute(location.pathname);
  window.__moesweep.route = r;
  if (r.view === "sweeps" || r.view === "unknown" || !current.model || current.model.id !== r.id) {
    if (current.model) current.model.close();
    current.model = null;
    setBanner("stream", null);
  }
  disposeCharts();
  try {
    if (r.view === "sweeps") return await viewSweeps();
    if (r.view === "unknown") return notFound(`No page at ${location.pathname}.`);
    if (!current.model) {
      $("#view").innerHTML = `<p class="muted">Loading sweep ${r.id}…</p>`;
      const model = new SweepModel(r.id);
      current.model = model;
      window.__moesweep.model = model;
      try {
        const started = performance.now();
        await model.load();
        window.__moesweep.timings.snapshot_ms = Math.round(performance.now() - started);
      } catch (e) {
        if (current.model === model) current.model = null;
        if (e.status === 404) return notFound(`Sweep ${r.id} does not exist.`);
        throw e;
      }
      model.listeners.add(() => scheduleRender(model));
    }
    renderSweepView(r, current.model);
  } catch (e) {
    if (e.status === 0 || (e.body && e.body.coordinator_unreachable)) {
      // Retry by itself once the dashboard or the coordinator is back.
      $("#view").innerHTML = `<p class="muted">Waiting for the ${e.status === 0 ? "dashboard server" : "coordinator"}…</p>`;
      setTimeout(() => { if (parseRoute(location.pathname).view === r.view) route(); }, 2000);
      return;
    }
    failed(e);
  }
}

function navigate(href) {
  history.pushState(null, "", href);
  route();
  window.scrollTo(0, 0);
}

window.__moesweep = { renders: 0, firstRender: 0, model: null, route: null, timings: {} };
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
route();
