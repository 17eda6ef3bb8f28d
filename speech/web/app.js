// The chat page: microphone -> 80 ms frames -> WebSocket; agent frames -> jitter-buffered playback; the
// monologue text as it comes; a latency readout. Protocol: docs/server.md (kinds 0x00 handshake, 0x01 audio,
// 0x02 text, 0x03 error). Audio on the wire is Opus (the browser's WebCodecs) where the browser has it, else 16-bit
// PCM; `?audio=pcm16` or `?audio=opus` chooses.
"use strict";

const HANDSHAKE = 0, AUDIO = 1, TEXT = 2, ERROR = 3, PROTOCOL = 1;
const RATE = 24000, FRAME = 1920, JITTER_FRAMES = 3, SPEECH_PEAK = 0.02, END_SILENT_FRAMES = 4;
const OPUS = { codec: "opus", sampleRate: RATE, numberOfChannels: 1 };
const OPUS_ENC = { ...OPUS, bitrate: 32000, opus: { frameDuration: 20000 } };
const $ = (id) => document.getElementById(id);

// What the page shows, also read by the browser test.
window.chatStats = { connected: false, sent: 0, received: 0, text: "", latencyMs: null, error: null,
                     agentAudible: 0, audio: null, played: 0 };
let ctx = null, ws = null, stream = null, playback = null;
let speaking = false, silentFrames = 0, speechEnd = null;
let wire = "pcm16", encoder = null, decoder = null, micTime = 0, agentTime = 0;
const agentAcc = new Float32Array(FRAME);  // decoded Opus samples until a whole frame
let agentN = 0;

async function chooseWire() {
  const want = new URLSearchParams(location.search).get("audio");
  if (want === "pcm16") return "pcm16";
  const have = typeof AudioEncoder !== "undefined" && typeof AudioDecoder !== "undefined" &&
    (await AudioEncoder.isConfigSupported(OPUS_ENC)).supported &&
    (await AudioDecoder.isConfigSupported(OPUS)).supported;
  if (want === "opus" && !have) throw new Error("this browser has no WebCodecs Opus; use ?audio=pcm16");
  return have ? "opus" : "pcm16";
}

// Opus messages: packets, each prefixed by its length (uint16 LE)
function packPackets(packets) {
  const out = new Uint8Array(1 + packets.reduce((n, p) => n + 2 + p.length, 0));
  out[0] = AUDIO;
  let i = 1;
  for (const p of packets) { out[i] = p.length & 255; out[i + 1] = p.length >> 8; out.set(p, i + 2); i += 2 + p.length; }
  return out;
}
function unpackPackets(b) {
  const packets = [];
  for (let i = 0; i + 2 <= b.length;) {
    const n = b[i] | (b[i + 1] << 8);
    packets.push(b.subarray(i + 2, i + 2 + n));
    i += 2 + n;
  }
  return packets;
}

function openOpus() {
  encoder = new AudioEncoder({
    output: (chunk) => {
      const data = new Uint8Array(chunk.byteLength);
      chunk.copyTo(data);
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(packPackets([data]));
    },
    error: (e) => showError("Opus encoder: " + e.message),
  });
  encoder.configure(OPUS_ENC);
  decoder = new AudioDecoder({
    output: (ad) => {
      const f = new Float32Array(ad.numberOfFrames);
      ad.copyTo(f, { planeIndex: 0, format: "f32-planar" });
      const step = ad.sampleRate / RATE;  // browsers may decode Opus at 48 kHz: back to the page's 24 kHz
      ad.close();
      for (let x = 0; x < f.length - 1e-9; x += step) {
        const i = Math.floor(x), w = x - i;
        agentAcc[agentN++] = i + 1 < f.length ? f[i] * (1 - w) + f[i + 1] * w : f[i];
        if (agentN === FRAME) { playAgent(agentAcc.slice()); agentN = 0; }  // whole 80 ms frames, as with PCM
      }
    },
    error: (e) => showError("Opus decoder: " + e.message),
  });
  decoder.configure(OPUS);
}

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
    wire = await chooseWire();
  } catch (err) {
    showError(err.message);
    return;
  }
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
  ws.onopen = () => {
    const options = wire === "opus" ? new TextEncoder().encode(JSON.stringify({ audio: "opus" })) : new Uint8Array(0);
    const hello = new Uint8Array(2 + options.length);
    hello.set([HANDSHAKE, PROTOCOL]);
    hello.set(options, 2);
    ws.send(hello);
  };
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
  if (encoder) {  // the encoder's output callback sends the packets
    const i16 = new Int16Array(pcm), f = new Float32Array(i16.length);
    for (let i = 0; i < i16.length; i++) f[i] = i16[i] / 32768;
    const ad = new AudioData({ format: "f32", sampleRate: RATE, numberOfFrames: f.length, numberOfChannels: 1,
                               timestamp: micTime, data: f });
    micTime += f.length / RATE * 1e6;
    encoder.encode(ad);
    ad.close();
  } else {
    const msg = new Uint8Array(1 + pcm.byteLength);
    msg[0] = AUDIO;
    msg.set(new Uint8Array(pcm), 1);
    ws.send(msg);
  }
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
    const info = JSON.parse(new TextDecoder().decode(body));
    window.chatStats.audio = info.audio || "pcm16";
    $("wire").textContent = window.chatStats.audio;
    if (window.chatStats.audio === "opus") openOpus();
    window.chatStats.connected = true;
    setStatus("live", "live: speak");
  } else if (kind === AUDIO) {
    $("received").textContent = ++window.chatStats.received;
    if (decoder) {  // the decoder's output callback plays the samples
      for (const p of unpackPackets(body)) {
        decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: agentTime, duration: 20000, data: p }));
        agentTime += 20000;
      }
    } else {
      const pcm = new Int16Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
      const f = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
      playAgent(f);
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

function playAgent(f) {
  let peak = 0;
  for (let i = 0; i < f.length; i++) peak = Math.max(peak, Math.abs(f[i]));
  if (playback) playback.port.postMessage(f, [f.buffer]);
  window.chatStats.played++;
  $("agent-level").value = Math.min(1, peak * 4);
  if (peak > SPEECH_PEAK) {
    window.chatStats.agentAudible++;
    if (speechEnd !== null) {  // latency: end of the user's speech to the first agent audio after it
      window.chatStats.latencyMs = Math.round(performance.now() - speechEnd + JITTER_FRAMES * FRAME / RATE * 1000);
      $("latency").textContent = window.chatStats.latencyMs + " ms";
      speechEnd = null;
    }
  }
}

function stop(closeSocket = true) {
  window.chatStats.connected = false;
  if (closeSocket && ws && ws.readyState <= WebSocket.OPEN) ws.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  for (const c of [encoder, decoder]) if (c && c.state !== "closed") c.close();
  ws = null; stream = null; ctx = null; encoder = null; decoder = null; micTime = 0; agentTime = 0; agentN = 0;
  $("start").textContent = "Start";
  $("start").classList.remove("stop");
}

$("start").addEventListener("click", () => (ws ? stop() : start()));
