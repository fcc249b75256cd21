// ONNX Runtime peer: times the FastViTHD tower exported by bench/torch_reference/export_onnx.py, on the CPU
// execution provider, and prints one JSON object in the shape of `fastvlm bench --json` (timings.vision_ms:
// median over --reps, timings_min_max, peak_rss_mb).
//
//   node bench/peers-node/ort_vision.mjs --model fastvithd-1024.onnx [--reps 3] [--threads 2]
//   node bench/peers-node/ort_vision.mjs --model tiny-256.onnx --check golden/image_a_320x200.safetensors
//
// The timed input is a fixed pattern in [0,1] (the tower has no data-dependent work). --check instead feeds a
// golden file's pixel_values and compares image_features (max |diff| / max |ref|), exiting 1 above 1e-4.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    reps: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    check: { type: 'string' },
  },
});
if (!args.model) {
  console.error('ort_vision.mjs: --model FILE.onnx is required');
  process.exit(2);
}
const reps = Number(args.reps);
const threads = Number(args.threads);
if (!(reps >= 1) || !(threads >= 1)) {
  console.error(`ort_vision.mjs: --reps ${args.reps} and --threads ${args.threads} must be positive integers`);
  process.exit(2);
}

// Reads the F32 tensors of a safetensors file: 8-byte header length, JSON header, raw little-endian data.
function readSafetensors(path) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const base = 8 + headerLength;
  const tensors = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__' || entry.dtype !== 'F32') continue;
    const [begin, end] = entry.data_offsets;
    const copy = new Float32Array((end - begin) / 4);
    new Uint8Array(copy.buffer).set(bytes.subarray(base + begin, base + end));
    tensors[name] = { shape: entry.shape, data: copy };
  }
  return tensors;
}

const session = await ort.InferenceSession.create(args.model, {
  executionProviders: ['cpu'],
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
const dims = session.inputMetadata?.[0]?.shape ?? null;
const inputName = session.inputNames[0];

if (args.check) {
  const golden = readSafetensors(args.check);
  const pixels = golden.pixel_values;
  const out = await session.run({ [inputName]: new ort.Tensor('float32', pixels.data, pixels.shape) });
  const got = out[session.outputNames[0]].data;
  const ref = golden.image_features.data;
  if (got.length !== ref.length) {
    console.error(`ort_vision.mjs: the model gives ${got.length} values, ${args.check} holds ${ref.length}`);
    process.exit(1);
  }
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ref.length; ++i) {
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - ref[i]));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  const rel = maxDiff / maxRef;
  console.log(`${rel <= 1e-4 ? 'ok  ' : 'FAIL'} onnxruntime image_features max|diff|/max|ref| ${rel.toExponential(2)} (bound 1e-04)`);
  process.exit(rel <= 1e-4 ? 0 : 1);
}

// The input side comes from the exported graph's static shape [1,3,S,S].
const size = Array.isArray(dims) && typeof dims[2] === 'number' ? dims[2] : null;
if (!size) {
  console.error(`ort_vision.mjs: ${args.model} has no static [1,3,S,S] input shape`);
  process.exit(2);
}
const pixels = new Float32Array(3 * size * size);
for (let i = 0; i < pixels.length; ++i) pixels[i] = (i % 251) / 250;
const input = new ort.Tensor('float32', pixels, [1, 3, size, size]);
const times = [];
for (let rep = 0; rep < reps; ++rep) {
  const start = performance.now();
  await session.run({ [inputName]: input });
  times.push(performance.now() - start);
}
const sorted = [...times].sort((a, b) => a - b);
const mid = sorted.length >> 1;
const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
console.log(JSON.stringify({
  peer: 'onnxruntime',
  onnxruntime_version: ort.env.versions?.common ?? 'unknown',
  model: args.model,
  image_size: size,
  reps,
  threads,
  timings: { vision_ms: median },
  timings_min_max: { vision_ms: [sorted[0], sorted[sorted.length - 1]] },
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,
}));
