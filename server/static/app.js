// The page: upload a video and show what TSM predicts and which frames it sampled; or
// stream the camera to the online model over a WebSocket.  No libraries.
'use strict';

const $ = (id) => document.getElementById(id);
const LONG_VIDEO_S = 20;        // auto windows above this duration
const MAX_IN_FLIGHT = 2;        // camera frames awaiting an answer; more are skipped, not queued
const state = { token: sessionStorage.getItem('tsm-token') || '', model: null, result: null,
                selected: -1 };

// ---- HTTP ----

async function api(path, options = {}) {
  const headers = state.token ? { Authorization: 'Bearer ' + state.token } : {};
  const res = await fetch(path, { ...options, headers });
  let body;
  try { body = await res.json(); } catch (e) { body = { error: res.statusText }; }
  if (res.status === 401) $('token-row').hidden = false;
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

async function loadModel() {
  try {
    const m = state.model = await api('/v1/model');
    $('model-info').textContent = `${m.model_name} · ${m.num_classes} classes · weights ` +
      `${m.weights.file} (sha256 ${m.weights.sha256.slice(0, 12)}…) · ${m.engine} ${m.precision}` +
      ` · ${m.protocol.text}`;
    if (!m.online.available) {
      $('online-warning').textContent = `These weights cannot run online (shift ${m.online.shift_direction}).`;
      $('cam-start').disabled = true;
    } else if (!m.online.trained_for_online) {
      $('online-warning').textContent = `These weights use the ${m.online.shift_direction} shift: ` +
        'the online answers will be rough.';
    }
  } catch (e) {
    $('model-info').textContent = e.message;
  }
}

// ---- one video ----

function colour(index) { return `hsl(${(index * 137.508) % 360}, 62%, 52%)`; }

function clock(s) {
  const m = Math.floor(s / 60), sec = s - 60 * m;
  const whole = Math.abs(sec - Math.round(sec)) < 1e-6;   // 00:07, or 00:03.3 as predict.py prints
  return `${String(m).padStart(2, '0')}:${whole ? String(Math.round(sec)).padStart(2, '0')
                                                : sec.toFixed(1).padStart(4, '0')}`;
}

function windowFor(duration) {
  const asked = parseFloat($('window').value);
  if (asked > 0) return asked;
  return duration > LONG_VIDEO_S ? Math.max(2, Math.round(duration / 12)) : null;
}

function pickFile(file) {
  if (!file) return;
  const player = $('player');
  if (player.src) URL.revokeObjectURL(player.src);
  $('result').hidden = true;
  status(`reading ${file.name}…`);
  let sent = false;
  const send = (duration) => { if (!sent) { sent = true; predict(file, duration); } };
  player.onloadedmetadata = () => send(player.duration);
  player.onerror = () => send(NaN);          // a container the browser cannot play: the server can
  setTimeout(() => send(NaN), 1500);
  player.src = URL.createObjectURL(file);
}

async function predict(file, duration) {
  const form = new FormData();
  form.append('video', file);
  form.append('topk', String(Math.min(5, state.model ? state.model.num_classes : 5)));
  form.append('frames', '1');
  const win = Number.isFinite(duration) ? windowFor(duration) : parseFloat($('window').value) || null;
  if (win) form.append('window_seconds', String(win));
  status(`predicting ${file.name}…`);
  try {
    const r = await api('/v1/predict', { method: 'POST', body: form });
    const long = r.video.duration > LONG_VIDEO_S;
    if (!win && long && !$('window').value) {   // the browser could not tell the duration
      return predict(file, r.video.duration);
    }
    state.result = r;
    render(r);
    status(`${file.name}: ${r.records.length > 1 ? r.records.length + ' windows' : 'done'}`);
  } catch (e) {
    status(`${file.name}: ${e.message}`, true);
  }
}

function bars(box, names, indices, probs) {
  box.replaceChildren(...names.map((name, i) => {
    const row = document.createElement('div');
    row.className = 'bar';
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = label.title = name;
    const track = document.createElement('span');
    track.className = 'track';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.display = 'block';
    fill.style.width = `${(100 * probs[i]).toFixed(1)}%`;
    fill.style.background = colour(indices[i]);
    track.append(fill);
    const value = document.createElement('span');
    value.className = 'value';
    value.textContent = probs[i].toFixed(3);
    row.append(label, track, value);
    return row;
  }));
}

function select(k) {
  const r = state.result;
  const rec = r.records[k];
  state.selected = k;
  $('top1').textContent = rec.top_names[0];
  $('top1-prob').textContent = rec.top_probs[0].toFixed(3);
  bars($('bars'), rec.top_names, rec.top_indices, rec.top_probs);
  $('window-label').textContent = rec.start !== undefined
    ? `window ${k + 1} of ${r.records.length}: ${clock(rec.start)}–${clock(rec.end)}` : '';
  $('frames').replaceChildren(...(r.frames ? r.frames[k] : []).map((src, i) => {
    const img = document.createElement('img');
    img.src = src;
    img.alt = `sampled frame ${i + 1}`;
    return img;
  }));
  [...$('timeline').children].forEach((el, i) => el.classList.toggle('selected', i === k));
}

function render(r) {
  $('result').hidden = false;
  const windows = r.records[0].start !== undefined && r.records.length > 1;
  $('timeline-box').hidden = !windows;
  if (windows) {
    const total = r.records[r.records.length - 1].end;
    const seen = new Map();
    $('timeline').replaceChildren(...r.records.map((rec, k) => {
      const seg = document.createElement('div');
      seg.style.left = `${(100 * rec.start / total).toFixed(3)}%`;
      seg.style.width = `${(100 * (rec.end - rec.start) / total).toFixed(3)}%`;
      seg.style.background = colour(rec.top_indices[0]);
      seg.title = `${clock(rec.start)}–${clock(rec.end)} ${rec.top_names[0]} ${rec.top_probs[0].toFixed(2)}`;
      seg.onclick = () => { $('player').currentTime = rec.start; select(k); };
      seen.set(rec.top_indices[0], rec.top_names[0]);
      return seg;
    }));
    $('legend').replaceChildren(...[...seen].map(([index, name]) => {
      const item = document.createElement('span');
      item.style.setProperty('--c', colour(index));
      item.textContent = name;
      return item;
    }));
  }
  select(0);
  const t = r.timings;
  $('timings').textContent = `${r.video.num_frames} frames at ${r.video.fps ? r.video.fps.toFixed(2) : '?'} fps · ` +
    `decode ${t.decode.toFixed(3)} s · model ${t.model.toFixed(3)} s · total ${t.total.toFixed(3)} s · ` +
    `batched with ${Math.max(...r.batch_sizes)} clip(s)`;
}

$('player').addEventListener('timeupdate', () => {
  const r = state.result;
  if (!r || r.records.length < 2 || r.records[0].start === undefined) return;
  const now = $('player').currentTime;
  const k = r.records.findIndex((rec) => now >= rec.start && now < rec.end);
  if (k >= 0 && k !== state.selected) select(k);
});

// ---- the camera, online ----

const cam = { stream: null, ws: null, timer: null };

function stopCamera() {
  clearInterval(cam.timer);
  if (cam.ws) cam.ws.close();
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  Object.assign(cam, { stream: null, ws: null, timer: null });
  $('cam-start').disabled = false;
  $('cam-stop').disabled = true;
}

async function startCamera() {
  $('cam-start').disabled = true;
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    $('online-stats').textContent = `no camera: ${e.message}`;
    $('cam-start').disabled = false;
    return;
  }
  const video = $('cam');
  video.srcObject = cam.stream;
  await video.play();
  $('cam-stop').disabled = false;
  // browsers cannot set headers on a WebSocket: the token goes as a subprotocol, checked
  // before the server accepts the connection
  const protocols = ['tsm.online'];
  if (state.token) protocols.push('tsm.bearer.' + base64url(state.token));
  const ws = cam.ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/online`, protocols);
  const counts = { sent: 0, answered: 0, skipped: 0, inFlight: 0, ms: 0, recent: [] };
  const canvas = document.createElement('canvas');
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onclose = (ev) => {
    if (cam.ws !== ws) return;
    if (!opened) {  // refused at the handshake: a token is missing or wrong, or another origin
      $('online-stats').textContent = 'the server refused the camera connection (token?)';
      $('token-row').hidden = false;
    } else {
      $('online-stats').textContent += ` · closed${ev.reason ? ': ' + ev.reason : ''}`;
    }
    stopCamera();
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.ready) {  // frames at a steady rate: the online model's time step is one frame
      const fps = Math.min(60, Math.max(1, parseFloat($('cam-fps').value) || 5));
      cam.timer = setInterval(() => sendFrame(ws, video, canvas, counts), 1000 / fps);
      return;
    }
    if (msg.class_name === undefined && !msg.error) return;
    if (msg.class_name === undefined && counts.inFlight === 0) {  // refused before the first frame
      $('online-stats').textContent = msg.error;
      return;
    }
    counts.inFlight -= 1;
    if (msg.error) { $('online-stats').textContent = msg.error; return; }
    counts.answered += 1;
    counts.ms += msg.model_ms;
    const rate = answerRate(counts.recent, performance.now());
    $('online-label').textContent = msg.class_name;
    $('online-prob').textContent = msg.probability.toFixed(3);
    bars($('online-bars'), msg.top.map((t) => t.class_name), msg.top.map((t) => t.class_index),
         msg.top.map((t) => t.probability));
    const ms = counts.ms / counts.answered;
    $('online-stats').textContent = `frame ${msg.frame + 1} · ${counts.answered} answered · ` +
      `${rate.toFixed(1)} answers/s · ${counts.skipped} skipped (server busy) · ` +
      `model ${ms.toFixed(ms < 10 ? 1 : 0)} ms/frame`;
    Object.assign($('online-stats').dataset, { answered: counts.answered, perSecond: rate.toFixed(2),
                                              modelMs: ms.toFixed(2) });
  };
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  bytes.forEach((b) => { binary += String.fromCharCode(b); });
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// answers per second over the last 2 s of answers (times: their arrival, in ms)
function answerRate(times, now) {
  times.push(now);
  while (now - times[0] > 2000) times.shift();
  return times.length > 1 ? 1000 * (times.length - 1) / (now - times[0]) : 0;
}

function sendFrame(ws, video, canvas, counts) {
  if (ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  if (counts.inFlight >= MAX_IN_FLIGHT) { counts.skipped += 1; return; }
  const short = state.model ? state.model.protocol.short_size : 256;  // the server rescales anyway
  const scale = Math.min(1, short / Math.min(video.videoWidth, video.videoHeight));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
  counts.inFlight += 1;
  counts.sent += 1;
  canvas.toBlob((blob) => blob.arrayBuffer().then((buf) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(buf); else counts.inFlight -= 1;
  }), 'image/jpeg', 0.85);
}

// ---- wiring ----

$('file').addEventListener('change', (e) => pickFile(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  pickFile(e.dataTransfer.files[0]);
});
$('cam-start').addEventListener('click', startCamera);
$('cam-stop').addEventListener('click', stopCamera);
$('token').value = state.token;
$('token-save').addEventListener('click', () => {
  state.token = $('token').value.trim();
  sessionStorage.setItem('tsm-token', state.token);
  $('token-row').hidden = true;
  loadModel();
});
loadModel();
