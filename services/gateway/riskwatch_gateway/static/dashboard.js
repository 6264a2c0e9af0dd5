// riskwatch dashboard: one WebSocket (PROTOCOL.md), frames and boxes drawn client-side on canvas.
"use strict";

const RISK_COLORS = { none: "#2e7d32", low: "#f9a825", medium: "#ef6c00", high: "#d32f2f", unspecified: "#607d8b" };
const CATEGORY_COLORS = { pedestrian: "#4fc3f7", vehicle: "#ba68c8", two_wheeler: "#4db6ac", other: "#bdbdbd",
                          unspecified: "#bdbdbd" };
const RISK_RANK = { unspecified: 0, none: 1, low: 2, medium: 3, high: 4 };
const TIMELINE_SECONDS = 600;
const MAX_ALERTS = 100;
// Each track's recent ground points, drawn as its trail: this many seconds of capture time, at most this many points.
const TRAIL_SECONDS = 1.5;
const TRAIL_MAX_POINTS = 60;
// A conflict line's colour, by the smaller of its TTC and PET (display only; the task generator has its own bounds).
const CONFLICT_SEVERITY = [{ below_s: 1.5, level: "high" }, { below_s: 3.0, level: "medium" }];

const params = new URLSearchParams(location.search);
const token = params.get("token");
const cameras = new Map();  // camera_id -> tile state
const health = { sources: {}, heartbeat: null };
let socket = null;
let retryMs = 500;

function $(selector, root = document) { return root.querySelector(selector); }

function showMessage(text) {
  $("#message").textContent = text;
  if (text) setTimeout(() => { if ($("#message").textContent === text) $("#message").textContent = ""; }, 5000);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  socket = new WebSocket(url);
  setConnection("connecting");
  socket.onopen = () => {
    retryMs = 500;
    setConnection("online");
    send({ type: "subscribe", cameras: "*", frames: true });
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = () => {
    setConnection("offline");
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function setConnection(state) {
  const badge = $("#connection");
  badge.dataset.state = state;
  badge.className = `badge ${state === "online" ? "online" : state === "connecting" ? "reconnecting" : "offline"}`;
  badge.textContent = state === "online" ? "live" : state;
}

function handle(message) {
  switch (message.type) {
    case "detections": onDetections(message); break;
    case "risk_state": onRiskState(message); break;
    case "alert": onAlert(message); break;
    case "camera_status": onCameraStatus(message); break;
    case "cameras": message.cameras.forEach(onCameraStatus); break;
    case "camera_added": onCameraStatus(message.camera); break;
    case "health":
      health.sources[message.source || "pipeline"] = { snapshot: message, at: Date.now() };
      renderHealth();
      break;
    case "heartbeat": health.heartbeat = message; renderHealth(); break;
    case "error": showMessage(message.message); break;
    default: break;
  }
}

function tile(cameraId) {
  let state = cameras.get(cameraId);
  if (state) return state;
  const element = $("#tile-template").content.firstElementChild.cloneNode(true);
  element.dataset.camera = cameraId;
  element.dataset.risk = "unspecified";
  element.dataset.boxes = "0";
  element.dataset.frames = "0";
  $(".camera-id", element).textContent = cameraId;
  $(".remove", element).addEventListener("click", () => {
    if (confirm(`Remove camera ${cameraId}?`)) send({ type: "remove_camera", camera_id: cameraId });
  });
  const list = $("#cameras");
  const after = [...list.children].find((other) => other.dataset.camera > cameraId);
  list.insertBefore(element, after || null);
  state = { element, frame: $("canvas.frame", element), timeline: $("canvas.timeline", element),
            image: null, detections: null, risk: null, history: [], status: null,
            trails: new Map(), resolutions: {} };
  cameras.set(cameraId, state);
  renderSummary();
  loadHistory(cameraId, state);
  return state;
}

// The timeline would start empty on every page load: fill it (and the alert list) from the camera's recent history.
async function loadHistory(cameraId, state) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const reply = await fetch(`/api/cameras/${encodeURIComponent(cameraId)}/history?limit=200`, { headers });
    if (!reply.ok) return;
    const history = await reply.json();
    const points = history.levels.map((p) => ({ t: p.time, level: p.level }));
    addHistory(state, points);
    history.alerts.forEach(onAlert);
    state.element.dataset.history = String(state.history.length);
  } catch (error) {
    showMessage(`history of ${cameraId}: ${error}`);
  }
}

// Merges points into the camera's timeline, in time order, keeping the last TIMELINE_SECONDS.
function addHistory(state, points) {
  const merged = [...state.history, ...points].sort((a, b) => a.t - b.t);
  state.history = merged.filter((p, i) => i === 0 || p.t !== merged[i - 1].t || p.level !== merged[i - 1].level);
  const cutoff = Date.now() / 1000 - TIMELINE_SECONDS;
  while (state.history.length > 1 && state.history[1].t < cutoff) state.history.shift();
  drawTimeline(state);
}

function onCameraStatus(status) {
  if (status.removed) {
    const state = cameras.get(status.camera_id);
    if (state) state.element.remove();
    cameras.delete(status.camera_id);
    renderSummary();
    return;
  }
  const state = tile(status.camera_id);
  state.status = status;
  const badge = $(".status", state.element);
  badge.textContent = status.status;
  badge.className = `status badge ${status.status}`;
  badge.title = status.error || status.source;
  // Why a camera is not online (a missing file, an unreachable host), readable without hovering.
  $(".status-reason", state.element).textContent = status.status === "online" ? "" : status.error || "";
  $(".fps", state.element).textContent = `${status.measured_fps.toFixed(1)} / ${status.fps} fps`;
  const calibration = $(".calibration", state.element);
  calibration.textContent = status.calibrated ? "calibrated" : "uncalibrated";
  calibration.title = status.calibrated ? "speeds and gaps in metres" : "no ground-plane calibration: speeds in box sizes/s";
  state.element.dataset.calibrated = String(Boolean(status.calibrated));
  renderCounts(state);
  renderHealth();
}

function onDetections(message) {
  const state = tile(message.camera_id);
  state.detections = message;
  addTrailPoints(state, message);
  state.element.dataset.frames = String(Number(state.element.dataset.frames) + 1);
  if (message.frame_jpeg_b64) {
    const image = new Image();
    image.onload = () => { state.image = image; draw(state); };
    image.src = `data:image/jpeg;base64,${message.frame_jpeg_b64}`;
  } else {
    draw(state);
  }
  renderCounts(state);
}

// Where a track touches the ground: the detector's smoothed ground point, else the bottom centre of its box.
function groundPoint(detection) {
  if (detection.kinematics) return detection.kinematics.ground_point_px;
  const [x1, , x2, y2] = detection.box;
  return [(x1 + x2) / 2, y2];
}

// Keeps each confirmed track's last TRAIL_SECONDS of ground points (image pixels), forgetting tracks gone that long.
function addTrailPoints(state, message) {
  const now = message.capture_time || Date.now() / 1000;
  for (const d of message.detections) {
    if (!d.track_id) continue;
    const trail = state.trails.get(d.track_id) || [];
    const [x, y] = groundPoint(d);
    if (trail.length && now < trail[trail.length - 1].t) trail.length = 0;  // a camera that went back in time
    trail.push({ t: now, x, y });
    state.trails.set(d.track_id, trail);
  }
  for (const [trackId, trail] of state.trails) {
    while (trail.length && (trail[0].t < now - TRAIL_SECONDS || trail.length > TRAIL_MAX_POINTS)) trail.shift();
    if (!trail.length) state.trails.delete(trackId);
  }
}

function speedLabel(kinematics) {
  if (!kinematics) return "";
  return kinematics.speed_m_s !== undefined
    ? `${kinematics.speed_m_s.toFixed(1)} m/s` : `${kinematics.speed_box_s.toFixed(1)} box/s`;
}

function conflictLabel(conflict) {
  const parts = [];
  if (conflict.ttc_s !== undefined) parts.push(`TTC ${conflict.ttc_s.toFixed(1)} s`);
  if (conflict.pet_s !== undefined) parts.push(`PET ${conflict.pet_s.toFixed(1)} s`);
  return parts.join(" · ");
}

function conflictLevel(conflict) {
  const seconds = Math.min(conflict.ttc_s ?? Infinity, conflict.pet_s ?? Infinity);
  const band = CONFLICT_SEVERITY.find((b) => seconds < b.below_s);
  return band ? band.level : "low";
}

// A group's level: its LLM verdict's, or the measured danger's while that is higher and not yet resolved.
function groupLevels(state) {
  const levels = {};
  for (const group of (state.risk && state.risk.groups) || []) {
    const measured = group.provisional && group.provisional.risk_level;
    levels[group.group_id] = measured && RISK_RANK[measured] > RISK_RANK[group.risk_level] ? measured : group.risk_level;
  }
  return levels;
}

// "provisional" while a group's level rests on measured danger; then how the verdict resolved it.
function groupMarks(state) {
  const marks = { ...state.resolutions };
  for (const group of (state.risk && state.risk.groups) || []) {
    if (group.provisional) marks[group.group_id] = "provisional";
  }
  return marks;
}

// "assessment failed: <kind>" per group whose latest assessment failed (its level is the last good one, stale).
function groupFailures(state) {
  const failed = {};
  for (const group of (state.risk && state.risk.groups) || []) {
    if (group.failure) failed[group.group_id] = `assessment failed: ${group.failure.kind}`;
  }
  return failed;
}

function draw(state) {
  const canvas = state.frame;
  const ctx = canvas.getContext("2d");
  const det = state.detections;
  if (state.image) {
    if (canvas.width !== state.image.width || canvas.height !== state.image.height) {
      canvas.width = state.image.width;
      canvas.height = state.image.height;
    }
    ctx.drawImage(state.image, 0, 0);
  } else {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  if (!det || !det.image_width) return;
  const sx = canvas.width / det.image_width;
  const sy = canvas.height / det.image_height;
  const scale = Math.max(1, canvas.width / 640);
  ctx.font = `${Math.round(12 * scale)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const d of det.detections) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = CATEGORY_COLORS[d.category] || CATEGORY_COLORS.other;
    ctx.lineWidth = 1.5 * scale;
    ctx.setLineDash([]);
    ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    label(ctx, `${d.class_name}${d.track_id ? " #" + d.track_id : ""}`, x1 * sx, y1 * sy, ctx.strokeStyle);
  }
  const overlay = motionOverlay(state, det);
  drawMotion(ctx, overlay, sx, sy, scale);
  const levels = groupLevels(state);
  const failed = groupFailures(state);
  const marks = groupMarks(state);
  const note = (g) => [marks[g.group_id], failed[g.group_id]].filter(Boolean).join(", ");
  for (const g of det.groups) {
    const level = levels[g.group_id] || "unspecified";
    const [x1, y1, x2, y2] = g.box;
    const pad = 4 * scale;
    ctx.strokeStyle = RISK_COLORS[level];
    ctx.lineWidth = (level === "unspecified" ? 2 : 4) * scale;
    ctx.setLineDash(level === "unspecified" ? [6 * scale, 4 * scale] : []);
    ctx.strokeRect(x1 * sx - pad, y1 * sy - pad, (x2 - x1) * sx + 2 * pad, (y2 - y1) * sy + 2 * pad);
    ctx.setLineDash([]);
    const text = note(g) ? `${g.group_id}: ${level} (${note(g)})` : `${g.group_id}: ${level}`;
    label(ctx, text, x1 * sx - pad, (y2 * sy) + pad + 16 * scale, RISK_COLORS[level]);
  }
  // The model of what was just drawn, for tests and for anyone inspecting the page.
  window.riskwatchOverlay = { ...(window.riskwatchOverlay || {}), [det.camera_id]: overlay };
  state.element.dataset.boxes = String(det.detections.length);
  state.element.dataset.groups = JSON.stringify(Object.fromEntries(
    det.groups.map((g) => [g.group_id, levels[g.group_id] || "unspecified"])));
  $(".groups", state.element).textContent = det.groups.length
    ? det.groups.map((g) => `${g.group_id}: ${levels[g.group_id] || "—"}${note(g) ? ` (${note(g)})` : ""}`)
      .join("  ") : "";
}

// What the motion layer shows for one frame, in image pixels: each track's trail and speed, each group's conflict.
function motionOverlay(state, det) {
  const byTrack = new Map(det.detections.filter((d) => d.track_id).map((d) => [d.track_id, d]));
  const tracks = [...byTrack.values()].map((d) => ({
    track_id: d.track_id,
    trail: (state.trails.get(d.track_id) || []).map((p) => [p.x, p.y]),
    speed: speedLabel(d.kinematics),
    at: [d.box[0], d.box[1]],
  }));
  const conflicts = [];
  for (const g of det.groups) {
    const a = g.conflict && byTrack.get(g.conflict.track_a);
    const b = g.conflict && byTrack.get(g.conflict.track_b);
    if (!a || !b) continue;
    const level = conflictLevel(g.conflict);
    conflicts.push({ group_id: g.group_id, track_a: a.track_id, track_b: b.track_id, from: groundPoint(a),
                     to: groundPoint(b), label: conflictLabel(g.conflict), level, color: RISK_COLORS[level] });
  }
  return { frame_id: det.frame_id, tracks, conflicts };
}

function drawMotion(ctx, overlay, sx, sy, scale) {
  ctx.lineCap = "round";
  for (const track of overlay.tracks) {
    if (track.trail.length > 1) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2 * scale;
      ctx.beginPath();
      track.trail.forEach(([x, y], i) => (i ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
      ctx.stroke();
    }
    // Just inside the box's top left corner, under the class label.
    if (track.speed) label(ctx, track.speed, track.at[0] * sx, track.at[1] * sy + 16 * scale, "#e0e0e0");
  }
  for (const conflict of overlay.conflicts) {
    const [ax, ay] = conflict.from;
    const [bx, by] = conflict.to;
    ctx.strokeStyle = conflict.color;
    ctx.lineWidth = 3 * scale;
    ctx.beginPath();
    ctx.moveTo(ax * sx, ay * sy);
    ctx.lineTo(bx * sx, by * sy);
    ctx.stroke();
    if (conflict.label) {
      const mid = [((ax + bx) / 2) * sx, ((ay + by) / 2) * sy - 6 * scale];
      label(ctx, conflict.label, mid[0] - ctx.measureText(conflict.label).width / 2, mid[1], conflict.color);
    }
  }
}

function label(ctx, text, x, y, color) {
  const width = ctx.measureText(text).width + 6;
  const height = parseInt(ctx.font, 10) + 4;
  ctx.fillStyle = color;
  ctx.fillRect(x, y - height, width, height);
  ctx.fillStyle = "#000";
  ctx.fillText(text, x + 3, y - 1);
}

function onRiskState(message) {
  const state = tile(message.camera_id);
  if (state.risk && message.version <= state.risk.version) return;
  state.risk = message;
  addHistory(state, [{ t: message.updated_time || Date.now() / 1000, level: message.max_level }]);
  state.element.dataset.risk = message.max_level;
  state.element.dataset.version = String(message.version);
  const badge = $(".risk", state.element);
  badge.textContent = `risk: ${message.max_level}`;
  badge.className = `risk badge risk-${message.max_level}`;
  // Shown on the camera too: a failing group may have no box in the latest frame.
  const failures = (message.groups || []).filter((g) => g.failure);
  state.element.dataset.failed = JSON.stringify(Object.fromEntries(failures.map((g) => [g.group_id, g.failure.kind])));
  $(".failure", state.element).textContent = failures.length
    ? failures.map((g) => `${g.group_id}: assessment failed: ${g.failure.kind}`).join("  ") : "";
  $(".failure", state.element).title = failures.map((g) => g.failure.message).join("\n");
  draw(state);
  renderSummary();
}

function drawTimeline(state) {
  const canvas = state.timeline;
  const ctx = canvas.getContext("2d");
  const now = Date.now() / 1000;
  const start = now - TIMELINE_SECONDS;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const x = (t) => ((Math.max(t, start) - start) / TIMELINE_SECONDS) * canvas.width;
  state.history.forEach((point, i) => {
    const end = i + 1 < state.history.length ? state.history[i + 1].t : now;
    ctx.fillStyle = RISK_COLORS[point.level] || RISK_COLORS.unspecified;
    ctx.fillRect(x(point.t), 0, Math.max(1, x(end) - x(point.t)), canvas.height);
  });
}

// A provisional alert is marked so until a verdict resolves it; the resolution then replaces the mark, on the
// alert and on the group.
function onAlert(alert) {
  const list = $("#alerts");
  const key = alert.provisional ? `${alert.task_id}#provisional` : alert.task_id;
  if (alert.provisional_resolution) resolveProvisional(alert);
  if ([...list.children].some((li) => li.dataset.key === key)) return;
  const item = document.createElement("li");
  const level = alert.risk_level || "unspecified";
  item.className = `risk-${level}`;
  item.dataset.key = key;
  item.dataset.task = alert.task_id;
  item.dataset.cameraId = alert.camera_id;
  item.dataset.groupId = alert.group_id;
  item.dataset.time = String(alert.completed_time || alert.capture_time || 0);
  const when = new Date(1000 * (alert.completed_time || alert.capture_time || Date.now() / 1000));
  const text = alert.failure ? `assessment failed: ${alert.failure.kind}` : (alert.description || "");
  if (alert.failure) item.title = alert.failure.message;
  item.innerHTML = "<div><strong></strong> <span class='level'></span> <span class='mark'></span></div>" +
    "<div class='text'></div><div class='meta'></div>";
  $("strong", item).textContent = `${alert.camera_id} · ${alert.group_id}`;
  $(".level", item).textContent = level.toUpperCase();
  if (alert.provisional) setMark(item, "provisional");
  else if (alert.provisional_resolution) setMark(item, alert.provisional_resolution);
  $(".text", item).textContent = text;
  $(".meta", item).textContent =
    `${when.toLocaleTimeString()} · ${(alert.risk_types || []).join(", ")} · ${alert.model || ""}`;
  const after = [...list.children].find((li) => Number(li.dataset.time) < Number(item.dataset.time));
  list.insertBefore(item, after || null);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
}

function setMark(item, mark) {
  item.dataset.mark = mark;
  $(".mark", item).textContent = mark;
}

function resolveProvisional(alert) {
  const state = tile(alert.camera_id);
  state.resolutions[alert.group_id] = alert.provisional_resolution;
  for (const li of $("#alerts").children) {
    const same = li.dataset.cameraId === alert.camera_id && li.dataset.groupId === alert.group_id;
    if (same && li.dataset.mark === "provisional") {
      setMark(li, alert.provisional_resolution);
    }
  }
  draw(state);
}

function renderCounts(state) {
  const status = state.status || {};
  const boxes = state.detections ? state.detections.detections.length : 0;
  $(".counts", state.element).textContent =
    `${boxes} objects · ${status.frames_detected ?? 0} frames · ${status.frames_dropped ?? 0} dropped`;
}

function renderSummary() {
  const levels = [...cameras.values()].map((s) => (s.risk ? s.risk.max_level : "unspecified"));
  const worst = levels.reduce((a, b) => (RISK_RANK[b] > RISK_RANK[a] ? b : a), "unspecified");
  $("#summary").textContent = `${cameras.size} camera(s) · highest risk: ${worst}`;
}

// A stage reports every interval_s; silent for this many intervals, it is shown as silent (down or cut off).
const SILENT_AFTER_INTERVALS = 3;
const NOT_SHOWN = new Set(["type", "source", "interval_s"]);

function healthValue(value) {
  if (Array.isArray(value)) return value.length ? value.join(", ") : "none";
  if (value && typeof value === "object") {
    const parts = Object.entries(value).map(([k, v]) => `${k} ${v}`);
    return parts.length ? parts.join(" · ") : "none";
  }
  return String(value);
}

function healthTable(rows) {
  const table = document.createElement("table");
  for (const [key, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = key;
    tr.insertCell().textContent = value;
  }
  return table;
}

function renderHealth() {
  const rows = [];
  const online = [...cameras.values()].filter((s) => s.status && s.status.status === "online").length;
  rows.push(["cameras online", `${online} / ${cameras.size}`]);
  const dropped = [...cameras.values()].reduce((n, s) => n + ((s.status && s.status.frames_dropped) || 0), 0);
  rows.push(["frames dropped (detector busy)", String(dropped)]);
  if (health.heartbeat) rows.push(["last heartbeat", new Date(health.heartbeat.time * 1000).toLocaleTimeString()]);
  const blocks = [healthTable(rows)];
  const now = Date.now();
  for (const [source, { snapshot, at }] of Object.entries(health.sources).sort()) {
    const age = (now - at) / 1000;
    const silent = age > SILENT_AFTER_INTERVALS * (snapshot.interval_s || 2);
    const section = document.createElement("section");
    section.dataset.source = source;
    section.dataset.state = silent ? "silent" : "reporting";
    const title = document.createElement("h3");
    title.textContent = silent ? `${source} — silent for ${Math.round(age)} s` : source;
    const sourceRows = Object.entries(snapshot)
      .filter(([key]) => !NOT_SHOWN.has(key))
      .map(([key, value]) => [key, healthValue(value)]);
    section.append(title, healthTable(sourceRows));
    blocks.push(section);
  }
  $("#health").replaceChildren(...blocks);
}

$("#add-camera").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const camera = { id: form.get("id"), source: form.get("source") };
  if (form.get("fps")) camera.fps = Number(form.get("fps"));
  send({ type: "add_camera", camera });
  event.target.reset();
});
setInterval(() => cameras.forEach(drawTimeline), 5000);
setInterval(renderHealth, 1000);
renderHealth();
connect();
