// Chapter 7's date model, live in the page: onnxruntime-web (served from _static/ort/, no
// CDN) runs book/_static/date/date_model.onnx, exported from book/data/date_model.pt by
// scripts/export_date_onnx.py. The model is one decoding step (source ids and the target
// prefix in; next-token log-probabilities and the last position's cross-attention out), and
// this file runs greedy decoding around it exactly as solutions.decoding.greedy_decode does.
//
// window.dateDemo.normalise(text) -> {output, tokens, attention, ms} is also what
// tests/test_book.py calls to compare the page with PyTorch.
(function () {
  "use strict";
  const root = document.getElementById("date-demo");
  if (!root) return;
  const script = document.currentScript;
  const STATIC = new URL(".", script.src).href; // .../_static/
  const input = root.querySelector("#date-demo-input");
  const outputEl = root.querySelector("#date-demo-output");
  const statusEl = root.querySelector("#date-demo-status");
  const mapEl = root.querySelector("#date-demo-map");
  const layerEl = root.querySelector("#date-demo-layer");
  root.hidden = false;

  const state = { delay: 60, run: 0, last: null, lastMs: null };

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error("could not load " + src));
      document.head.appendChild(s);
    });
  }

  async function start() {
    if (location.protocol === "file:") {
      throw new Error("the model runs when the book is served over HTTP " +
        "(python -m http.server -d _build/html), not from a file:// address");
    }
    await loadScript(STATIC + "ort/ort.wasm.min.js");
    const ort = window.ort;
    ort.env.wasm.numThreads = 1; // no SharedArrayBuffer needed
    ort.env.wasm.wasmPaths = STATIC + "ort/";
    const meta = await (await fetch(STATIC + "date/date_model.json")).json();
    const session = await ort.InferenceSession.create(STATIC + "date/date_model.onnx",
      { executionProviders: ["wasm"] });
    return { ort, meta, session };
  }

  const ready = start();

  function encode(meta, text) {
    const ids = [];
    for (const ch of text) {
      const i = meta.source_alphabet.indexOf(ch);
      if (i < 0) throw new Error(`the model does not know the character "${ch}"`);
      ids.push(i + 3);
    }
    return ids;
  }

  function decodeId(meta, id) {
    return id === meta.eos ? "EOS" : meta.target_alphabet[id - 3];
  }

  // Greedy decoding, one ONNX run per output token. onToken(char, attention) after each.
  async function normalise(text, onToken) {
    const { ort, meta, session } = await ready;
    const src = encode(meta, text);
    if (!src.length) return { output: "", tokens: [], attention: [], ms: 0 };
    const t0 = performance.now();
    const srcTensor = new ort.Tensor("int64", BigInt64Array.from(src.map(BigInt)), [1, src.length]);
    const tokens = [meta.bos];
    const attention = []; // per output token: [layer][head][source position]
    for (let step = 0; step < meta.max_len; step++) {
      const prefix = new ort.Tensor("int64", BigInt64Array.from(tokens.map(BigInt)),
        [1, tokens.length]);
      const out = await session.run({ src: srcTensor, prefix });
      const logp = out.log_probs.data;
      let best = 0;
      for (let v = 1; v < logp.length; v++) if (logp[v] > logp[best]) best = v;
      const w = out.cross_attention.data; // (1, layers, H, S)
      const perLayer = [];
      for (let l = 0; l < meta.layers; l++) {
        const heads = [];
        for (let h = 0; h < meta.heads; h++) {
          const at = (l * meta.heads + h) * src.length;
          heads.push(Array.from(w.slice(at, at + src.length)));
        }
        perLayer.push(heads);
      }
      tokens.push(best);
      attention.push(perLayer);
      if (onToken) await onToken(decodeId(meta, best), perLayer);
      if (best === meta.eos) break;
    }
    const chars = tokens.slice(1).filter((t) => t !== meta.eos).map((t) => decodeId(meta, t));
    return { output: chars.join(""), tokens, attention, ms: performance.now() - t0 };
  }

  // viridis, 5 stops, interpolated
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colour(x) {
    const t = Math.max(0, Math.min(1, x)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((a, k) => Math.round(a + f * (VIRIDIS[i + 1][k] - a)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // The cross-attention map: one row per output character, one column per source character.
  function drawMap(text, rows, layer) {
    const cell = 22, left = 44, top = 26;
    const src = Array.from(text);
    const width = left + src.length * cell + 4, height = top + rows.length * cell + 4;
    const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `role="img" aria-label="cross-attention of each output character">`];
    src.forEach((ch, j) => {
      parts.push(`<text x="${left + j * cell + cell / 2}" y="${top - 8}" text-anchor="middle">` +
        `${ch === " " ? "␣" : escapeHtml(ch)}</text>`);
    });
    rows.forEach((row, i) => {
      parts.push(`<text x="${left - 6}" y="${top + i * cell + cell / 2 + 5}" text-anchor="end">` +
        `${escapeHtml(row.char)}</text>`);
      const heads = row.attention[layer];
      src.forEach((_, j) => {
        let mean = 0;
        for (const h of heads) mean += h[j] / heads.length;
        parts.push(`<rect x="${left + j * cell}" y="${top + i * cell}" width="${cell - 1}" ` +
          `height="${cell - 1}" fill="${colour(mean)}"><title>${row.char} ← ` +
          `${escapeHtml(src[j])}: ${mean.toFixed(2)}</title></rect>`);
      });
    });
    parts.push("</svg>");
    mapEl.innerHTML = parts.join("");
  }

  function escapeHtml(s) {
    return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function update() {
    const text = input.value;
    const run = ++state.run;
    outputEl.textContent = "";
    outputEl.removeAttribute("data-done");
    mapEl.innerHTML = "";
    statusEl.textContent = "";
    const rows = [];
    try {
      const result = await normalise(text, async (ch, perLayer) => {
        if (run !== state.run) throw new Error("superseded");
        rows.push({ char: ch, attention: perLayer });
        if (ch !== "EOS") outputEl.textContent += ch;
        drawMap(text, rows, +layerEl.value);
        if (state.delay) await sleep(state.delay);
      });
      if (run !== state.run) return;
      state.last = { text, rows };
      state.lastMs = result.ms;
      outputEl.dataset.for = text;
      outputEl.dataset.done = "1";
      statusEl.textContent = text ? `${result.tokens.length - 1} steps, ` +
        `${result.ms.toFixed(0)} ms in your browser` : "";
    } catch (err) {
      if (err.message === "superseded") return;
      outputEl.dataset.for = text;
      outputEl.dataset.done = "1";
      statusEl.textContent = err.message;
    }
  }

  input.addEventListener("input", update);
  layerEl.addEventListener("change", () => {
    if (state.last) drawMap(state.last.text, state.last.rows, +layerEl.value);
  });
  ready.then(update, (err) => { statusEl.textContent = "The model could not start: " + err.message; });
  window.dateDemo = { ready, normalise, state };
})();
