// The chat page: microphone -> 80 ms PCM16 frames -> WebSocket; agent frames -> jitter-buffered playback; the
// monologue text as it comes; a latency readout. Protocol: docs/server.md (kinds 0x00 handshake, 0x01 audio,
// 0x02 text, 0x03 error).
"use strict";

const HANDSHAKE = 0, AUDIO = 1, TEXT = 2, ERROR = 3, PROTOCOL = 1;
const RATE = 24000, FRAME = 1920, JITTER_FRAMES = 3, SPEECH_PEAK = 0.02, END_SILENT_FRAMES = 4;
const $ = (id) => document.getElementById(id);

// What the page shows, also read by the browser test.
window.chatStats = { connected: false, sent: 0, received: 0, text: "", latencyMs: null, error: null,
                     agentAudible: 0 };
let ctx = null, ws = null, stream = null, playback = null;
let speaking = false, silentFrames = 0, speechEnd = null;

function setStatus(state, label) { const s = $("status"); s.dataset.state = state; s.textContent = label; }
function showError(msg) {
  window.chatStats.error = msg;
  const e = $("error"); e.textContent = msg; e.hidden = false;
  setStatus("error", "error");
}

async function start() {
  $("error").hidden = true;
  window.chatStats.error = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  } catch (err) {
    showError("The microphone was refused or is missing (" + err.name + "): allow microphone access and retry.");
    return;
  }
  ctx = new AudioContext({ sampleRate: RATE });
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const mic = ctx.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(ctx, "capture",
    { processorOptions: { outRate: RATE, frameSize: FRAME } });
  playback = new AudioWorkletNode(ctx, "playback",
    { processorOptions: { jitterFrames: JITTER_FRAMES }, outputChannelCount: [1] });
  playback.connect(ctx.destination);
  mic.connect(capture);

  const token = new URLSearchParams(location.search).get("token");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : ""));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(new Uint8Array([HANDSHAKE, PROTOCOL]));
  ws.onmessage = (ev) => onMessage(new Uint8Array(ev.data));
  ws.onclose = () => { if (window.chatStats.error === null) setStatus("idle", "disconnected"); stop(false); };
  capture.port.onmessage = (e) => onMicFrame(e.data);
  setStatus("connecting", "connecting");
  $("start").textContent = "Stop";
  $("start").classList.add("stop");
}

function onMicFrame({ pcm, peak }) {
  $("mic-level").value = Math.min(1, peak * 4);
  if (!window.chatStats.connected || ws.readyState !== WebSocket.OPEN) return;
  const msg = new Uint8Array(1 + pcm.byteLength);
  msg[0] = AUDIO;
  msg.set(new Uint8Array(pcm), 1);
  ws.send(msg);
  $("sent").textContent = ++window.chatStats.sent;
  // end of the user's speech: the first of END_SILENT_FRAMES quiet frames after speaking
  if (peak > SPEECH_PEAK) { speaking = true; silentFrames = 0; }
  else if (speaking && ++silentFrames === END_SILENT_FRAMES) {
    speaking = false;
    speechEnd = performance.now() - END_SILENT_FRAMES * FRAME / RATE * 1000;
  }
}

function onMessage(b) {
  const kind = b[0], body = b.subarray(1);
  if (kind === HANDSHAKE) {
    window.chatStats.connected = true;
    setStatus("live", "live: speak");
  } else if (kind === AUDIO) {
    const pcm = new Int16Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    const f = new Float32Array(pcm.length);
    let peak = 0;
    for (let i = 0; i < pcm.length; i++) { f[i] = pcm[i] / 32768; peak = Math.max(peak, Math.abs(f[i])); }
    playback.port.postMessage(f, [f.buffer]);
    $("agent-level").value = Math.min(1, peak * 4);
    $("received").textContent = ++window.chatStats.received;
    if (peak > SPEECH_PEAK) {
      window.chatStats.agentAudible++;
      if (speechEnd !== null) {  // latency: end of the user's speech to the first agent audio after it
        window.chatStats.latencyMs = Math.round(performance.now() - speechEnd + JITTER_FRAMES * FRAME / RATE * 1000);
        $("latency").textContent = window.chatStats.latencyMs + " ms";
        speechEnd = null;
      }
    }
  } else if (kind === TEXT) {
    const piece = new TextDecoder().decode(body.subarray(4));
    window.chatStats.text += piece;
    $("text").textContent = window.chatStats.text;
  } else if (kind === ERROR) {
    const err = JSON.parse(new TextDecoder().decode(body));
    showError(err.code === "busy" ? "The server is busy (all conversations are taken): try again in a moment."
                                  : `The server ended the conversation: ${err.message}`);
  }
}

function stop(closeSocket = true) {
  window.chatStats.connected = false;
  if (closeSocket && ws && ws.readyState <= WebSocket.OPEN) ws.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  ws = null; stream = null; ctx = null;
  $("start").textContent = "Start";
  $("start").classList.remove("stop");
}

$("start").addEventListener("click", () => (ws ? stop() : start()));
