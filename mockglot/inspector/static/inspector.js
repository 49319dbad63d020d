// The mockglot inspector: draws each page from the control plane's JSON routes and follows /_mockglot/events.
// Everything a client sent is inserted as text (textContent), never as HTML.
"use strict";

const PREFIX = "/_mockglot/ui";
const app = document.getElementById("app");
const PAGE = app.dataset.page;
const SUBJECT = app.dataset.subject;
const EVENT_TYPES = [
  "session.created", "session.started", "session.ended", "session.connected", "session.disconnected",
  "transcript.segment", "transcript.ready", "recording.ready", "recording.failed", "analysis.complete",
  "analysis.failed", "session.provider.connected", "session.provider.disconnected", "frame", "request",
  "webhook.attempt", "fault.fired", "reset", "resync",
];

// --- small helpers --------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

async function api(path, options = {}) {
  const headers = { "x-mockglot-ui": "1" };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function follow(params, handler) {
  const source = new EventSource(`/_mockglot/events?${new URLSearchParams(params)}`);
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => handler(type, JSON.parse(message.data)));
  }
  source.addEventListener("open", () => document.body.classList.remove("offline"));
  source.addEventListener("error", () => document.body.classList.add("offline"));
  return source;
}

function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return function run() {
    if (timer) { again = true; return; }
    Promise.resolve(fn()).catch(showError);
    timer = setTimeout(() => { timer = null; if (again) { again = false; run(); } }, ms);
  };
}

function showError(error) {
  let box = document.getElementById("error");
  if (!box) {
    box = h("p", { id: "error", class: "problem" });
    app.prepend(box);
  }
  box.textContent = String(error.message || error);
}

const seconds = (iso) => Date.parse(iso) / 1000;
const clockTime = (unix) => new Date(unix * 1000).toISOString().slice(11, 19);
const json = (value) => JSON.stringify(value, null, 2);
const link = (path, text) => h("a", { href: PREFIX + path }, text);
const badge = (text, kind) => h("span", { class: `badge ${kind || text}` }, text);

function table(columns, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "None yet."))));
}

function put(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

function fromFilter(input, text) {
  return !input.value || text.toLowerCase().includes(input.value.toLowerCase());
}

// --- audio: WAV in, waveform out ----------------------------------------------------------------------------

const MULAW = (() => {
  const table = new Int16Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff;
    let t = ((u & 0x0f) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    table[i] = u & 0x80 ? 0x84 - t : t - 0x84;
  }
  return table;
})();

function wavOfMulaw(bytes) {
  const samples = new Int16Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) samples[i] = MULAW[bytes[i]];
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, 8000, true); view.setUint32(28, 16000, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  new Int16Array(buffer, 44).set(samples);
  return { blob: new Blob([buffer], { type: "audio/wav" }), samples };
}

function pcmOfWav(buffer) {
  const view = new DataView(buffer);
  let offset = 12;
  while (offset + 8 <= buffer.byteLength) {
    const id = String.fromCharCode(...new Uint8Array(buffer, offset, 4));
    const size = view.getUint32(offset + 4, true);
    if (id === "data") return new Int16Array(buffer.slice(offset + 8, offset + 8 + (size & ~1)));
    offset += 8 + size + (size & 1);
  }
  return new Int16Array(0);
}

function drawWaveform(canvas, samples) {
  const width = canvas.width = canvas.clientWidth || 600;
  const height = canvas.height = 48;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  context.fillStyle = getComputedStyle(canvas).color;
  const per = Math.max(1, Math.floor(samples.length / width));
  for (let x = 0; x < width && x * per < samples.length; x++) {
    let low = 0;
    let high = 0;
    for (let i = x * per; i < Math.min(samples.length, (x + 1) * per); i++) {
      if (samples[i] < low) low = samples[i];
      if (samples[i] > high) high = samples[i];
    }
    const top = height / 2 - (high / 32768) * (height / 2);
    const bottom = height / 2 - (low / 32768) * (height / 2);
    context.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
}

function player(label, source) {
  // source: a URL (a WAV served by the control plane) or {blob, samples}
  const audio = h("audio", { controls: true, preload: "auto" });
  const canvas = h("canvas", { class: "waveform" });
  const block = h("div", { class: "player" }, h("h3", {}, label), audio, canvas);
  block.load = async (url) => {
    if (typeof url === "string") {
      const response = await fetch(url, { credentials: "same-origin" });
      const buffer = await response.arrayBuffer();
      const samples = pcmOfWav(buffer);
      audio.src = URL.createObjectURL(new Blob([buffer], { type: "audio/wav" }));
      requestAnimationFrame(() => drawWaveform(canvas, samples));
    } else {
      audio.src = URL.createObjectURL(url.blob);
      requestAnimationFrame(() => drawWaveform(canvas, url.samples));
    }
  };
  block.load(source).catch(showError);
  return block;
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// --- Sessions -------------------------------------------------------------------------------------------

function sessionRow(s) {
  const languages = s.source_language || s.target_language ? `${s.source_language || "?"} → ${s.target_language || "?"}` : "";
  return h("tr", { "data-session": s.id },
    h("td", {}, link(`/sessions/${encodeURIComponent(s.id)}`, s.id)),
    h("td", {}, badge(s.status)),
    h("td", {}, s.mode),
    h("td", {}, languages),
    h("td", { class: "mono" }, s.organization),
    h("td", { class: "mono" }, s.api_key),
    h("td", {}, s.connected ? badge("connected", "live") : "no"),
    h("td", { class: "num" }, `${s.frames_in} / ${s.frames_out}`),
    h("td", { class: "num" }, s.turns),
    h("td", { class: "num" }, `${s.duration_seconds.toFixed(1)} s`),
    h("td", {}, clockTime(seconds(s.created_at))));
}

function sessionsPage() {
  let sessions = [];
  const filter = h("input", { type: "search", placeholder: "Filter: organization, key, status, mode, ID", oninput: () => draw() });
  const holder = h("div");
  put(app, h("h1", {}, "Sessions"), filter, holder);
  function draw() {
    const shown = sessions
      .filter((s) => fromFilter(filter, [s.id, s.organization, s.api_key, s.status, s.mode].join(" ")))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : b.id.localeCompare(a.id)));
    put(holder, table(
      ["Session", "Status", "Mode", "Languages", "Organization", "Key", "Connected", "Frames in / out", "Turns", "Duration", "Created"],
      shown.map(sessionRow), { class: "sessions" }));
  }
  const load = throttle(async () => { sessions = (await api("/_mockglot/sessions")).data; draw(); }, 1000);
  follow({ types: "session.,reset,resync" }, () => load());
  setInterval(() => { if (sessions.some((s) => s.connected)) load(); }, 1000);
  load();
}

// --- A session ------------------------------------------------------------------------------------------

function frameSummary(frame) {
  const f = frame.frame;
  if (typeof f !== "object" || f === null) return String(f).slice(0, 120);
  switch (frame.type) {
    case "transcript.partial": return `${f.speaker}: ${f.text}`;
    case "transcript.final": return `${f.speaker}: ${f.text}${f.translation ? ` → ${f.translation.text}` : ""}`;
    case "session.error": return `${f.error && f.error.code}: ${f.error && f.error.message}`;
    case "session.ended": return f.reason;
    case "audio.input": return `${f.speaker} #${f.sequence}`;
    case "audio.output": return `turn ${f.turn} to ${f.listener}`;
    default: return "";
  }
}

function groupFrames(frames) {
  // A run of audio frames in one lane (same type, speaker and turn, nothing else in that lane between) becomes
  // one row; partials fold into the final of their turn.
  const finals = new Map();
  for (const frame of frames) {
    if (frame.type === "transcript.final") finals.set(`${frame.frame.turn}/${frame.frame.speaker}`, frame);
  }
  const rows = [];
  const lastInLane = {};
  const partials = new Map();
  for (const frame of frames) {
    const f = frame.frame || {};
    if (frame.type === "transcript.partial" && finals.has(`${f.turn}/${f.speaker}`)) {
      const key = `${f.turn}/${f.speaker}`;
      partials.set(key, [...(partials.get(key) || []), frame]);
      continue;
    }
    const last = lastInLane[frame.direction];
    const audio = frame.type === "audio.input" || frame.type === "audio.output";
    if (audio && last && last.type === frame.type && last.direction === frame.direction &&
        last.first.frame.speaker === f.speaker && last.first.frame.turn === f.turn) {
      last.frames.push(frame);
      continue;
    }
    const row = { type: frame.type, direction: frame.direction, first: frame, frames: [frame] };
    rows.push(row);
    lastInLane[frame.direction] = row;
  }
  for (const row of rows) {
    if (row.type === "transcript.final") {
      row.partials = partials.get(`${row.first.frame.turn}/${row.first.frame.speaker}`) || [];
    }
  }
  return rows;
}

function frameRow(row, t0) {
  const first = row.first;
  const arrow = row.direction === "in" ? "client → server" : "server → client";
  const count = row.frames.length > 1 ? ` × ${row.frames.length}` : "";
  const pre = h("pre");
  const details = h("details", { id: `frame-${first.index}`, class: `frame ${row.direction}` },
    h("summary", {},
      h("span", { class: "at" }, `+${(first.at - t0).toFixed(3)} s`),
      h("span", { class: "dir" }, arrow),
      h("span", { class: "type" }, first.type + count),
      h("span", { class: "text" }, frameSummary(first)),
      row.partials && row.partials.length ? h("span", { class: "muted" }, ` (${row.partials.length} partials)`) : null),
    pre);
  details.addEventListener("toggle", () => {
    if (!details.open || pre.textContent) return;
    const shown = [...(row.partials || []), ...row.frames.slice(0, 3)].map((frame) => json(frame.frame)).join("\n\n");
    pre.textContent = row.frames.length > 3 ? `${shown}\n\n… and ${row.frames.length - 3} more` : shown;
  });
  return details;
}

function timeline(rows, t0, t1) {
  const span = Math.max(t1 - t0, 0.001);
  const x = (t) => `${Math.min(100, ((t - t0) / span) * 100).toFixed(3)}%`;
  const lanes = { in: h("div", { class: "lane in" }), out: h("div", { class: "lane out" }) };
  for (const row of rows) {
    const start = row.frames[0].at;
    const end = row.frames[row.frames.length - 1].at;
    const title = `${row.type}${row.frames.length > 1 ? ` × ${row.frames.length}` : ""} at +${(start - t0).toFixed(3)} s`;
    const mark = h("span", {
      class: `mark ${row.type.replace(/[^a-z]/g, "-")}`,
      title,
      onclick: () => {
        const target = document.getElementById(`frame-${row.first.index}`);
        if (target) { target.open = true; target.scrollIntoView({ block: "center" }); }
      },
    });
    mark.style.left = x(start);  // through the CSSOM: the page's CSP allows no inline style attribute
    if (row.frames.length > 1) mark.style.width = `calc(${x(end)} - ${x(start)} + 2px)`;
    lanes[row.direction].append(mark);
  }
  return h("div", { class: "timeline" },
    h("div", { class: "lane-label" }, "client → server"), lanes.in,
    h("div", { class: "lane-label" }, "server → client"), lanes.out,
    h("div", { class: "axis" }, h("span", {}, "0 s"), h("span", {}, `${span.toFixed(span < 10 ? 2 : 1)} s`)));
}

function sessionPage(id) {
  const path = `/_mockglot/sessions/${encodeURIComponent(id)}`;
  const frames = new Map();
  const faults = [];
  let session = null;
  const parts = {
    summary: h("div"), audio: h("div", { class: "players" }), output: h("div", { class: "players" }),
    timeline: h("div"), frames: h("div", { class: "frames" }), transcript: h("div"), requests: h("div"),
    deliveries: h("div"), faults: h("div"),
  };
  put(app, 
    h("h1", {}, "Session ", h("span", { class: "mono" }, id)), parts.summary,
    section("Timeline", parts.timeline), section("Transcript", parts.transcript),
    section("Audio received", parts.audio), section("Synthesized output", parts.output),
    section("Frames", parts.frames), section("REST requests", parts.requests),
    section("Webhook deliveries", parts.deliveries), section("Faults fired", parts.faults));
  const players = new Map();

  function drawSummary() {
    const s = session;
    const metadata = Object.entries(s.metadata || {});
    put(parts.summary, 
      h("dl", { class: "summary" },
        h("dt", {}, "Status"), h("dd", { id: "status" }, badge(s.status), s.end_reason ? ` (${s.end_reason})` : ""),
        h("dt", {}, "Mode"), h("dd", {}, s.mode),
        h("dt", {}, "Languages"), h("dd", {}, `${s.source_language || "?"} → ${s.target_language || "?"}`),
        h("dt", {}, "Organization"), h("dd", { class: "mono" }, s.organization, ` (${s.environment})`),
        h("dt", {}, "Key"), h("dd", { class: "mono" }, s.api_key),
        h("dt", {}, "Connected"), h("dd", { id: "connected" }, s.connected ? badge("connected", "live") : "no"),
        h("dt", {}, "Frames in / out"), h("dd", { id: "frame-counts" }, `${s.frames_in} / ${s.frames_out}`),
        h("dt", {}, "Turns"), h("dd", {}, s.turns),
        h("dt", {}, "Duration"), h("dd", {}, `${s.duration_seconds.toFixed(1)} s`),
        h("dt", {}, "Scenario / engine"), h("dd", {}, `${s.scenario} / ${s.engine}`)),
      metadata.length ? h("div", { class: "metadata" }, h("h3", {}, "Metadata"),
        table(["Key", "Value"], metadata.map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", {}, v))))) : null);
    for (const [speaker, ms] of Object.entries(s.audio_ms)) {
      const url = `${path}/audio/${speaker}?encoding=pcm`;
      const label = `${speaker} (${(ms / 1000).toFixed(2)} s)`;
      if (!players.has(speaker)) {
        const block = player(label, url);
        block.dataset.speaker = speaker;
        block.ms = ms;
        players.set(speaker, block);
        parts.audio.append(block);
      } else if (players.get(speaker).ms !== ms && !s.connected) {
        const block = players.get(speaker);
        block.ms = ms;
        block.querySelector("h3").textContent = label;
        block.load(url).catch(showError);
      }
    }
    if (!players.size) put(parts.audio, h("p", { class: "muted" }, "No audio received yet."));
    else parts.audio.querySelectorAll("p.muted").forEach((p) => p.remove());
  }

  function drawFrames() {
    const ordered = [...frames.values()].sort((a, b) => a.index - b.index);
    // The time axis runs from the first frame to the last (offsets are from the stream's first frame).
    const t0 = ordered.length ? ordered[0].at : session ? seconds(session.created_at) : 0;
    const t1 = ordered.length ? Math.max(ordered[ordered.length - 1].at, t0 + 0.01) : t0 + 1;
    const rows = groupFrames(ordered);
    const opened = new Set([...parts.frames.querySelectorAll("details[open]")].map((d) => d.id));
    put(parts.timeline, timeline(rows, t0, t1));
    put(parts.frames, ...(rows.length ? rows.map((row) => frameRow(row, t0)) : [h("p", { class: "muted" }, "No frames yet.")]));
    for (const id of opened) { const d = document.getElementById(id); if (d) d.open = true; }
    const finals = ordered.filter((f) => f.type === "transcript.final" && typeof f.frame === "object");
    put(parts.transcript, table(["Turn", "Speaker", "Text", "Translation", "Confidence"], finals.map((f) => h("tr", {},
      h("td", { class: "num" }, f.frame.turn), h("td", {}, f.frame.speaker), h("td", {}, f.frame.text),
      h("td", {}, f.frame.translation ? f.frame.translation.text : ""), h("td", { class: "num" }, f.frame.confidence)))));
    drawOutput(ordered);
  }

  const outputs = new Map();
  function drawOutput(ordered) {
    const turns = new Map();
    for (const f of ordered) {
      if (f.type !== "audio.output" || typeof f.frame !== "object") continue;
      const key = `turn ${f.frame.turn} (${f.frame.speaker} to ${f.frame.listener})`;
      turns.set(key, [...(turns.get(key) || []), f.frame]);
    }
    for (const [key, list] of turns) {
      const signature = list.length;
      if (outputs.has(key) && outputs.get(key).signature === signature) continue;
      const chunks = list.sort((a, b) => a.sequence - b.sequence).map((f) => base64Bytes(f.audio.payload));
      const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) { bytes.set(c, at); at += c.length; }
      const block = player(`${key}: ${(bytes.length / 8000).toFixed(2)} s`, wavOfMulaw(bytes));
      block.signature = signature;
      if (outputs.has(key)) outputs.get(key).replaceWith(block); else parts.output.append(block);
      outputs.set(key, block);
    }
    if (!outputs.size) put(parts.output, h("p", { class: "muted" }, "No synthesized audio sent yet."));
    else parts.output.querySelectorAll("p.muted").forEach((p) => p.remove());
  }

  function addFrame(frame) {
    if (!frames.has(frame.index)) { frames.set(frame.index, frame); scheduleFrames(); }
  }
  const scheduleFrames = throttle(drawFrames, 250);
  const loadSummary = throttle(async () => {
    try {
      session = await api(path);
    } catch (error) {
      if (error.status === 404) { put(app, h("h1", {}, "Not found"), h("p", { class: "problem" }, `No session ${id} on this server.`)); return; }
      throw error;
    }
    drawSummary();
  }, 300);
  const loadFrames = async () => {
    const journal = await api(`${path}/frames`);
    for (const f of journal.frames) addFrame({ index: f.index, direction: f.direction, at: f.unix, type: f.type, frame: f.frame });
  };
  const loadRequests = throttle(async () => {
    const requests = (await api(`/_mockglot/requests?session_id=${encodeURIComponent(id)}&limit=1000`)).data;
    put(parts.requests, table(["At", "Method", "Path", "Status", "ms"], requests.map((r) => h("tr", {},
      h("td", {}, clockTime(seconds(r.at))), h("td", {}, r.method), h("td", { class: "mono" }, r.path + (r.query ? `?${r.query}` : "")),
      h("td", {}, badge(String(r.status), r.status < 400 ? "ok" : "bad")), h("td", { class: "num" }, r.duration_ms)))));
  }, 500);
  const loadDeliveries = throttle(async () => {
    const deliveries = (await api(`/_mockglot/webhooks/deliveries?session_id=${encodeURIComponent(id)}&limit=1000`)).data;
    put(parts.deliveries, deliveriesTable(deliveries, loadDeliveries));
  }, 500);
  function drawFaults() {
    put(parts.faults, table(["At", "Fault", "Kind", "Fired", "Rule"], faults.map((e) => h("tr", {},
      h("td", {}, clockTime(e.at)), h("td", { class: "mono" }, e.data.fault_id), h("td", {}, e.data.kind),
      h("td", { class: "num" }, e.data.fired), h("td", {}, h("code", {}, JSON.stringify(e.data.rule)))))));
  }

  follow({ session_id: id, last_event_id: 0 }, (type, event) => {
    if (type === "frame") {
      const d = event.data;
      addFrame({ index: d.index, direction: d.direction, at: event.at, type: d.frame_type, frame: d.frame });
    } else if (type === "request") loadRequests();
    else if (type === "webhook.attempt") loadDeliveries();
    else if (type === "fault.fired") { faults.push(event); drawFaults(); }
    else if (type === "resync") { loadFrames().catch(showError); loadRequests(); loadDeliveries(); }
    if (type !== "frame") loadSummary();
  });
  setInterval(() => { if (session && session.connected) loadSummary(); }, 1000);
  loadSummary();
  loadFrames().catch(showError);
  loadRequests();
  loadDeliveries();
  drawFaults();
}

// --- Requests -------------------------------------------------------------------------------------------

function requestsPage() {
  let requests = [];
  const filter = h("input", { type: "search", placeholder: "Filter: path, method, status, key, session", oninput: () => draw() });
  const holder = h("div");
  put(app, h("h1", {}, "Requests"), h("p", { class: "muted" }, "The public API's request journal, newest first; credentials redacted."), filter, holder);
  function draw() {
    const shown = requests.filter((r) => fromFilter(filter, [r.method, r.path, r.status, r.api_key, r.session_id].join(" "))).reverse();
    put(holder, ...shown.map((r) => h("details", { class: "request" },
      h("summary", {}, h("span", { class: "at" }, clockTime(seconds(r.at))), h("span", { class: "method" }, r.method),
        h("span", { class: "mono" }, r.path + (r.query ? `?${r.query}` : "")), badge(String(r.status), r.status < 400 ? "ok" : "bad"),
        h("span", { class: "mono muted" }, r.api_key || ""), r.session_id ? link(`/sessions/${encodeURIComponent(r.session_id)}`, r.session_id) : null,
        h("span", { class: "muted" }, `${r.duration_ms} ms`)),
      h("pre", {}, json(r.headers)), r.body ? h("pre", {}, r.body) : null)));
    if (!shown.length) holder.append(h("p", { class: "muted" }, "No requests yet."));
  }
  const load = throttle(async () => { requests = (await api("/_mockglot/requests?limit=500")).data; draw(); }, 500);
  follow({ types: "request,reset,resync" }, () => load());
  load();
}

// --- Webhooks -------------------------------------------------------------------------------------------

function deliveriesTable(deliveries, reload) {
  return table(["Delivery", "Event", "Session", "Status", "Attempts", ""], [...deliveries].reverse().map((d) => h("tr", {},
    h("td", { class: "mono" }, d.id), h("td", {}, d.event_type),
    h("td", {}, link(`/sessions/${encodeURIComponent(d.session_id)}`, d.session_id)),
    h("td", {}, badge(d.status)),
    h("td", {}, h("ol", { start: 0 }, d.attempts.map((a) => h("li", {},
      `${clockTime(seconds(a.at))} ${a.status_code === null ? "—" : a.status_code} ${a.latency_ms === null ? "in flight" : `${a.latency_ms} ms`}${a.error ? ` ${a.error}` : ""}`)))),
    h("td", {}, h("button", {
      onclick: async () => { await api(`/_mockglot/webhooks/deliveries/${encodeURIComponent(d.id)}/redeliver`, { method: "POST" }); reload(); },
    }, "Redeliver")))));
}

function webhooksPage() {
  const endpoints = h("div");
  const deliveries = h("div");
  put(app, h("h1", {}, "Webhooks"), section("Endpoints", endpoints), section("Deliveries", deliveries));
  const load = throttle(async () => {
    const listed = (await api("/_mockglot/webhooks")).data;
    put(endpoints, table(["Endpoint", "URL", "Events", "Organization", "Source"], listed.map((e) => h("tr", {},
      h("td", { class: "mono" }, e.id), h("td", { class: "mono" }, e.url), h("td", {}, e.events ? e.events.join(", ") : "all"),
      h("td", { class: "mono" }, e.organization || "all"), h("td", {}, e.source)))));
    put(deliveries, deliveriesTable((await api("/_mockglot/webhooks/deliveries?limit=200")).data, load));
  }, 500);
  follow({ types: "webhook.attempt,reset,resync" }, () => load());
  load();
}

// --- Faults ---------------------------------------------------------------------------------------------

function faultsPage() {
  const holder = h("div");
  put(app, h("h1", {}, "Faults"), holder);
  const load = throttle(async () => {
    const faults = (await api("/_mockglot/faults")).data;
    put(holder, table(["Fault", "Kind", "Rule", "Fired", ""], faults.map((f) => h("tr", {},
      h("td", { class: "mono" }, f.id), h("td", {}, f.kind), h("td", {}, h("code", {}, JSON.stringify(f.rule))),
      h("td", { class: "num" }, f.fired),
      h("td", {}, h("button", { onclick: async () => { await api(`/_mockglot/faults/${encodeURIComponent(f.id)}`, { method: "DELETE" }); load(); } }, "Disarm"))))),
    faults.length ? h("button", { onclick: async () => { await api("/_mockglot/faults", { method: "DELETE" }); load(); } }, "Disarm all") : null);
  }, 300);
  follow({ types: "fault.fired,reset,resync" }, () => load());
  setInterval(load, 3000);
  load();
}

// --- Scenarios ------------------------------------------------------------------------------------------

async function scenariosPage() {
  const scenarios = (await api("/_mockglot/scenarios")).data;
  put(app, h("h1", {}, "Scenarios"), table(["Scenario", "Description", "Languages", "Turns", "Source"], scenarios.map((s) => h("tr", {},
    h("td", {}, link(`/scenarios/${encodeURIComponent(s.name)}`, s.name)), h("td", {}, s.description),
    h("td", {}, `${s.source_language || "?"} → ${s.target_language || "?"}`),
    h("td", {}, Object.entries(s.turns).map(([k, v]) => `${k}: ${v}`).join(", ")), h("td", { class: "mono" }, s.source)))));
}

async function scenarioPage(name) {
  const view = await api(`/_mockglot/scenarios/${encodeURIComponent(name)}`);
  const s = view.scenario;
  const turns = Object.entries(s.turns || {}).map(([speaker, list]) => section(`Turns of ${speaker}`,
    table(["#", "Text", "Translation", "Partials", "Confidence"], list.map((t, i) => h("tr", {},
      h("td", { class: "num" }, i + 1), h("td", {}, t.text), h("td", {}, t.translation || ""),
      h("td", {}, (t.partials || []).join(" · ")), h("td", { class: "num" }, t.confidence))))));
  put(app, h("h1", {}, "Scenario ", h("span", { class: "mono" }, s.name)),
    h("p", {}, s.description || ""), h("p", { class: "muted" }, `Source: ${view.source}`),
    ...turns, s.faults && s.faults.length ? section("Faults", h("pre", {}, json(s.faults))) : null,
    s.phrases ? section("Phrases", h("ul", {}, s.phrases.map((p) => h("li", {}, p)))) : null);
}

// --- Clock ----------------------------------------------------------------------------------------------

function clockPage() {
  const now = h("output", { id: "clock-now", class: "mono big" });
  const offset = h("output", { id: "clock-offset", class: "mono" });
  const amount = h("input", { id: "advance-seconds", type: "number", value: "60", min: "0", step: "any" });
  const when = h("input", { id: "set-to", type: "text", placeholder: "2026-03-10T11:55:00Z" });
  const change = async (body) => { show(await api("/_mockglot/clock", { method: "POST", body })); };
  const show = (state) => { now.textContent = state.now; offset.textContent = `${state.offset_seconds} s`; };
  put(app, h("h1", {}, "Clock"),
    h("dl", { class: "summary" }, h("dt", {}, "Server time"), h("dd", {}, now), h("dt", {}, "Offset from wall time"), h("dd", {}, offset)),
    h("form", { onsubmit: (e) => { e.preventDefault(); change({ advance: Number(amount.value) }).catch(showError); } },
      h("label", {}, "Advance by ", amount, " seconds "), h("button", { id: "advance", type: "submit" }, "Advance")),
    h("form", { onsubmit: (e) => { e.preventDefault(); change({ set: when.value }).catch(showError); } },
      h("label", {}, "Set to ", when, " "), h("button", { type: "submit" }, "Set")),
    h("button", { id: "clock-reset", onclick: () => change({ reset: true }).catch(showError) }, "Reset to wall time"));
  const load = async () => show(await api("/_mockglot/clock"));
  setInterval(() => load().catch(showError), 1000);
  load().catch(showError);
}

// --- start ----------------------------------------------------------------------------------------------

const PAGES = {
  sessions: sessionsPage, session: () => sessionPage(SUBJECT), requests: requestsPage, webhooks: webhooksPage,
  faults: faultsPage, scenarios: scenariosPage, scenario: () => scenarioPage(SUBJECT), clock: clockPage,
};
Promise.resolve().then(() => PAGES[PAGE]()).catch(showError);
