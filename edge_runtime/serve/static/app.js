// The mnist-edge page: draw or photograph a digit, send it to POST /api/predict, show the answer.
// No framework and nothing from elsewhere: the device may be offline, and the CSP allows 'self' only.
"use strict";

const TOKEN_KEY = "mnist-edge-token";
const INK_WIDTH = 18; // on the 280-pixel pad: about MNIST's stroke width once scaled to its 20-pixel box
// A digit of several strokes (a 4, a 5) is sent once the pen has rested this long, not after each
// stroke: a first stroke alone reads as another digit, and would be counted in the live figures.
const PEN_REST_MS = 700;
const state = { sent: 0, info: null, drawing: false, last: null, strokes: 0, prediction: null, resting: null,
  waitingForToken: null };
const byId = (id) => document.getElementById(id);

function authorization() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

// The error a 401 throws: the token is missing, or the one sent was refused.
class TokenNeeded extends Error {}

// Fetch JSON from the service; a 401 asks for the token (once, then it is remembered).
async function api(path, options = {}) {
  const sentToken = Boolean(localStorage.getItem(TOKEN_KEY));
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authorization() } });
  } catch (error) {
    // fetch() rejects only when no HTTP answer came at all: the browser's own words ("Failed to fetch") say less.
    throw new Error("the device is not answering: is mnist-edge serve running, and this device on the network?");
  }
  if (response.status === 401) {
    localStorage.removeItem(TOKEN_KEY);
    askForToken(sentToken);
    throw new TokenNeeded(sentToken ? "the token was rejected: type the right one above"
      : "this device needs its access token: type it above");
  }
  let body;
  try {
    body = await response.json();
  } catch (error) {
    body = { error: response.status + " " + response.statusText };
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// The one place that knows the shape of POST /api/predict's answer: what the page shows of it.
function readAnswer(body) {
  const prediction = body.predictions[0];
  return {
    id: prediction.id,
    label: prediction.label,
    className: prediction.class_name,
    probability: prediction.probability,
    top: prediction.top_k.map((entry) => ({ className: entry.class_name, probability: entry.probability })),
    input: prediction.input,
    serverMs: body.timing_ms.total,
    modelMs: body.timing_ms.model,
  };
}

// A probability as a whole percentage. An int8 output moves in steps of 1/256 (0.4%), and its largest
// value is 255/256: decimals, or "99.6%", would be false precision; "over 99%" is what it knows.
function percentText(probability) {
  return probability > 0.99 ? "over 99%" : Math.round(100 * probability) + "%";
}

function askForToken(rejected) {
  byId("token-note").textContent = rejected ? "That token was rejected. Type the one in this device's --token-file:"
    : "This device needs its access token (from its --token-file):";
  byId("token-note").className = rejected ? "warning" : "";
  byId("token-input").value = "";
  byId("token-form").hidden = false;
  byId("token-input").focus();
}

function setStatus(stateName, text) {
  const status = byId("status");
  status.dataset.state = stateName;
  status.textContent = text;
}

async function loadInfo() {
  try {
    const info = await api("api/info");
    state.info = info;
    byId("model-line").textContent =
      `${info.model} · ${info.backend} · sha256 ${String(info.sha256).slice(0, 12)}… · classes ${info.class_names.join(" ")}`;
    byId("seen-caption").textContent = `what the model saw (${info.input_shape[0]}×${info.input_shape[1]})`;
    showSelfCheck(info);
    showClassButtons(info.class_names);
    showLive(info.live);
    return true;
  } catch (error) {
    byId("model-line").textContent = error.message;
    return false;
  }
}

function showSelfCheck(info) {
  const line = byId("self-check");
  const check = info.self_check;
  if (!check) {
    line.textContent = "Start-up self-check: skipped, so this service does not report itself ready.";
    line.className = "warning";
    return;
  }
  const percent = (value) => (value === null ? "–" : (100 * value).toFixed(2) + "%");
  line.textContent = `Start-up self-check: ${percent(check.accuracy)} on ${check.images.toLocaleString()} test images, ` +
    `float model ${percent(check.float_accuracy)} — ${check.passed ? "passed" : "FAILED: " + check.failures.join("; ")}`;
  line.className = check.passed ? "good" : "warning";
}

// Send one image; only the newest request's answer is shown. What was shown before is cleared
// first, so an answer on screen always belongs to the picture just sent, and an error stands alone.
async function classify(body, headers, source) {
  const sequence = ++state.sent;
  state.waitingForToken = null;
  clearAnswer();
  setStatus("busy", `Classifying ${source}…`);
  const started = performance.now();
  try {
    const answer = readAnswer(await api("api/predict", { method: "POST", body, headers }));
    if (sequence !== state.sent) return;
    showAnswer(answer, performance.now() - started);
    await refreshLive(); // the shadow agreement moved
    if (sequence !== state.sent) return;
    setStatus("done", `Classified ${source}.`);
  } catch (error) {
    if (sequence !== state.sent) return;
    if (error instanceof TokenNeeded) state.waitingForToken = () => classify(body, headers, source);
    clearAnswer();
    setStatus("error", error.message);
  }
}

// Back to "no answer": nothing to read, nothing to label; the status line says why.
function clearAnswer() {
  byId("result").hidden = true;
  const result = byId("answer");
  result.textContent = "–";
  delete result.dataset.label;
  delete result.dataset.className;
  byId("top").replaceChildren();
  byId("latency").textContent = "";
  const seen = byId("seen");
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  state.prediction = null;
  byId("feedback").hidden = true;
  byId("feedback-yes").disabled = byId("feedback-no").disabled = true;
}

function showAnswer(answer, roundTripMs) {
  byId("result").hidden = false;
  const result = byId("answer");
  const probability = document.createElement("small");
  probability.textContent = `${percentText(answer.probability)} sure`;
  result.replaceChildren(answer.className, probability);
  result.dataset.label = answer.label;
  result.dataset.className = answer.className;
  // Only classes with a share that shows as at least 1%: a row of "0%" says nothing.
  const shown = answer.top.filter((entry) => Math.round(100 * entry.probability) > 0);
  byId("top").replaceChildren(...shown.map((entry) => {
    const item = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(100 * entry.probability) + "%";
    const text = document.createElement("span");
    text.textContent = `${entry.className}  ${percentText(entry.probability)}`;
    item.append(text, bar);
    return item;
  }));
  drawSeen(answer.input);
  askForFeedback(answer);
  byId("latency").textContent = `server ${answer.serverMs.toFixed(1)} ms (model ${answer.modelMs.toFixed(2)} ms), ` +
    `round trip ${roundTripMs.toFixed(0)} ms`;
}

// "Right?": the person's answer goes to POST /api/feedback, once per prediction.
function askForFeedback(prediction) {
  state.prediction = prediction;
  const box = byId("feedback");
  box.hidden = !(state.info && state.info.live);
  byId("feedback-yes").disabled = byId("feedback-no").disabled = false;
  byId("feedback-classes").hidden = true;
  setFeedbackStatus("idle", "");
}

function setFeedbackStatus(stateName, text) {
  const status = byId("feedback-status");
  status.dataset.state = stateName;
  status.textContent = text;
}

function showClassButtons(names) {
  byId("class-buttons").replaceChildren(...names.map((name, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.label = index;
    button.addEventListener("click", () => sendFeedback(index));
    return button;
  }));
}

async function sendFeedback(label) {
  const prediction = state.prediction;
  if (!prediction) return;
  byId("feedback-yes").disabled = byId("feedback-no").disabled = true;
  byId("feedback-classes").hidden = true;
  setFeedbackStatus("busy", "Sending…");
  try {
    const answer = await api("api/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: prediction.id, label }),
    });
    if (state.prediction !== prediction) return;
    const floatPart = answer.float_label === null ? "" :
      ` The float model said ${state.info.class_names[answer.float_label]}.`;
    setFeedbackStatus("done", `Thanks: counted as ${answer.class_name}.${floatPart}` +
      (answer.collected ? " Kept for retraining." : ""));
    showLive(answer.live);
  } catch (error) {
    if (state.prediction === prediction) setFeedbackStatus("error", error.message);
  }
}

// The live panel: the same figures as /api/info's "live", formatted one way (the browser test
// formats /api/info's numbers the same way and compares).
const percent = (value) => (100 * value).toFixed(2) + "%";

function proportionText(figure) {
  if (figure.trials === 0) return "none yet";
  return `${percent(figure.value)} of ${figure.trials} [${percent(figure.interval[0])}, ${percent(figure.interval[1])}]`;
}

function pointsText(value) {
  return (value >= 0 ? "+" : "") + value.toFixed(2);
}

function changeText(change) {
  if (change === null) return "none yet";
  const p = change.mcnemar_p < 0.001 ? "< 0.001" : change.mcnemar_p.toFixed(3);
  return `${pointsText(change.points)} pt [${pointsText(change.interval_points[0])}, ` +
    `${pointsText(change.interval_points[1])}], McNemar p ${p}`;
}

function showLive(live) {
  const panel = byId("live-panel");
  panel.hidden = !live;
  if (!live) return;
  state.info.live = live;
  if (live.reference === null) {
    byId("live-note").textContent = "This bundle has no float reference this device can run: int8 accuracy only.";
  }
  const recent = live.shadow.window;
  byId("live-agreement").textContent = proportionText(live.shadow.agreement);
  byId("live-window-label").textContent = `Agreement, last ${recent.size} shadowed images`;
  const windowCell = byId("live-window");
  windowCell.textContent = proportionText(recent.agreement) +
    (recent.below ? ` — below ${percent(recent.min_agreement)}` : "");
  windowCell.className = recent.below ? "warning" : "";
  byId("live-labelled").textContent = String(live.feedback.labelled);
  byId("live-int8").textContent = proportionText(live.accuracy.int8);
  byId("live-float").textContent = proportionText(live.accuracy.float);
  byId("live-change").textContent = changeText(live.accuracy.change);
}

async function refreshLive() {
  try {
    const info = await api("api/info");
    state.info = info;
    showLive(info.live);
  } catch (error) {
    // The next prediction or label tries again; the answer itself was shown.
  }
}

// The model's input as /api/info describes it ([height, width, channels]): rows of grey values,
// or of [r, g, b] for a colour model.
function drawSeen(rows) {
  if (!state.info) return; // the shape is not known yet: nothing to draw it with
  const [height, width, channels] = state.info.input_shape;
  const canvas = byId("seen");
  canvas.width = width;
  canvas.height = height;
  const seen = canvas.getContext("2d");
  const image = seen.createImageData(width, height);
  rows.flat().forEach((value, index) => {
    const [red, green, blue] = channels === 3 ? value : [value, value, value];
    image.data.set([red, green, blue, 255], 4 * index);
  });
  seen.putImageData(image, 0, 0);
}

// The drawing pad: pointer events cover mouse, pen and finger alike.
function setUpPad() {
  const pad = byId("pad");
  const context = pad.getContext("2d");
  const point = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
  };
  const line = (from, to) => {
    context.strokeStyle = "#000";
    context.lineWidth = INK_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  };
  clearPad();
  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    // The drawing changes: an answer about the old one, or one on its way, no longer applies.
    clearTimeout(state.resting);
    state.sent += 1;
    clearAnswer();
    setStatus("drawing", "Drawing… the answer comes when the pen rests.");
    state.drawing = true;
    state.last = point(event);
    line(state.last, state.last);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!state.drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const next = point(each);
      line(state.last, next);
      state.last = next;
    }
  });
  const finish = () => {
    if (!state.drawing) return;
    state.drawing = false;
    state.strokes += 1;
    clearTimeout(state.resting);
    state.resting = setTimeout(
      () => pad.toBlob((blob) => classify(blob, { "Content-Type": "image/png" }, "the drawing"), "image/png"),
      PEN_REST_MS);
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointercancel", finish);
  byId("clear").addEventListener("click", () => {
    clearPad();
    state.sent += 1; // an answer still on its way is for the drawing just cleared
    state.waitingForToken = null;
    clearAnswer();
    setStatus("idle", "Draw a digit, or choose a photo.");
  });
}

// A white pad, and no drawing waiting to be sent: called by Clear, and when a photo replaces the drawing.
function clearPad() {
  const pad = byId("pad");
  const context = pad.getContext("2d");
  clearTimeout(state.resting);
  context.fillStyle = "#fff";
  context.fillRect(0, 0, pad.width, pad.height);
  state.strokes = 0;
}

function setUpPhoto() {
  byId("photo").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    clearPad();
    const limit = state.info ? state.info.max_body_bytes : Infinity;
    if (file.size > limit) {
      state.sent += 1;
      clearAnswer();
      setStatus("error", `${file.name}: ${file.size.toLocaleString()} bytes is over this device's ${limit.toLocaleString()}-byte limit`);
      event.target.value = "";
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    classify(form, {}, file.name);
    event.target.value = "";
  });
}

// A live camera needs a secure context (HTTPS, or localhost); over plain http on a LAN the
// browser hides getUserMedia, and the file input above (which opens the camera on phones) remains.
function setUpCamera() {
  const note = byId("camera-note");
  if (!(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
    note.textContent = `A live camera view needs HTTPS or localhost, and this page is ${location.protocol}//${location.host}: ` +
      "use “Take or choose a photo”, which opens the camera on a phone.";
    return;
  }
  const start = byId("camera-start");
  const capture = byId("camera-capture");
  const video = byId("video");
  start.hidden = false;
  start.addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      video.hidden = false;
      await video.play();
      capture.hidden = false;
      note.textContent = "Point the camera at a digit on paper, then classify the frame.";
    } catch (error) {
      note.textContent = "The camera is not available: " + error.message;
    }
  });
  capture.addEventListener("click", () => {
    const frame = document.createElement("canvas");
    frame.width = video.videoWidth;
    frame.height = video.videoHeight;
    frame.getContext("2d").drawImage(video, 0, 0);
    clearPad();
    frame.toBlob((blob) => classify(blob, { "Content-Type": "image/png" }, "the camera frame"), "image/png");
  });
}

function setUpToken() {
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, byId("token-input").value.trim());
    byId("token-form").hidden = true;
    // What was sent before the token was asked for goes again, once the token is known to be right.
    const resend = state.waitingForToken;
    loadInfo().then((accepted) => {
      if (accepted && resend && state.waitingForToken === resend) resend();
    });
  });
}

function setUpFeedback() {
  byId("feedback-yes").addEventListener("click", () => sendFeedback(state.prediction.label));
  byId("feedback-no").addEventListener("click", () => {
    byId("feedback-classes").hidden = false;
  });
}

setUpToken();
setUpFeedback();
setUpPad();
setUpPhoto();
setUpCamera();
loadInfo();
