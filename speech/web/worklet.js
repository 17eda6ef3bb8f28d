// AudioWorklet: the microphone side (downmix, resample to 24 kHz, 80 ms PCM16 frames to the page) and the
// playback side (a small jitter buffer of the agent's frames).

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.outRate = options.processorOptions.outRate;
    this.frame = options.processorOptions.frameSize;
    this.ratio = sampleRate / this.outRate;  // input samples per output sample
    this.pos = 0;  // fractional read position in `this.buf`
    this.buf = new Float32Array(0);
    this.out = new Float32Array(this.frame);
    this.n = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const len = input[0].length;
    const mono = new Float32Array(len);
    for (const ch of input) for (let i = 0; i < len; i++) mono[i] += ch[i] / input.length;
    const merged = new Float32Array(this.buf.length + len);
    merged.set(this.buf); merged.set(mono, this.buf.length);
    let peak = 0;
    while (this.pos + 1 < merged.length) {  // linear interpolation resampler
      const i = Math.floor(this.pos), f = this.pos - i;
      const v = merged[i] * (1 - f) + merged[i + 1] * f;
      this.out[this.n++] = v;
      peak = Math.max(peak, Math.abs(v));
      this.pos += this.ratio;
      if (this.n === this.frame) {
        const pcm = new Int16Array(this.frame);
        for (let k = 0; k < this.frame; k++) pcm[k] = Math.max(-32768, Math.min(32767, Math.round(this.out[k] * 32767)));
        this.port.postMessage({ pcm: pcm.buffer, peak }, [pcm.buffer]);
        this.n = 0; peak = 0;
      }
    }
    const keep = Math.floor(this.pos);
    this.buf = merged.slice(keep);
    this.pos -= keep;
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.queue = [];  // Float32Array frames at the context's rate
    this.offset = 0;
    this.started = false;
    this.target = options.processorOptions.jitterFrames;  // frames buffered before playback starts
    this.port.onmessage = (e) => { this.queue.push(e.data); };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.started) {
      if (this.queue.length < this.target) { out.fill(0); return true; }
      this.started = true;
    }
    for (let i = 0; i < out.length; i++) {
      if (this.queue.length === 0) { out[i] = 0; continue; }
      const f = this.queue[0];
      out[i] = f[this.offset++];
      if (this.offset >= f.length) { this.queue.shift(); this.offset = 0; }
    }
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("playback", Playback);
