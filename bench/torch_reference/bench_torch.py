#!/usr/bin/env python3
"""Times the PyTorch peer on a FastVLM checkpoint the way `fastvlm bench --json` times the engine, and prints
one JSON object with the same keys (timings: median over --reps; timings_min_max; peak_rss_mb).

  /usr/bin/python3 bench/torch_reference/bench_torch.py -m /tmp/fastvlm-bench/fastvlm-0.5b --dtype bf16 \
      --image /tmp/fastvlm-bench/image-1024.png [-n 32] [--reps 3] [--threads 2] [--channels-last]
      [--vision-only [--image-size 512]]

--dtype bf16 computes in bf16 on the weights as released; f32 upcasts them. Each repetition: preprocess
(Pillow), vision tower, projector, prefill of the prompt with the image spliced in, then -n greedy tokens;
TTFT is preprocess + vision + projector + prefill + the first argmax. The prompt is the qwen_2 chat prompt for
"Describe the image." whose ids (with the -200 image marker) are read from the tiny-fastvlm golden.json
(--prompt-ids-from): PyTorch has no Qwen2 tokenizer here, and those ids are the official tokenization.
--vision-only times the tower alone (at --image-size, default the model's) on the preprocessed image."""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastvlm import FastVLM  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def ms_since(start):
    return (time.perf_counter() - start) * 1e3


def one_turn(model, image, prompt_ids, max_tokens, image_size, vision_only):
    t = {}
    turn_start = start = time.perf_counter()
    pixels = model.preprocess(image, image_size)
    t["preprocess_ms"] = ms_since(start)
    start = time.perf_counter()
    features = model.image_features(pixels)
    t["vision_ms"] = ms_since(start)
    if vision_only:
        return t
    start = time.perf_counter()
    embeds = model.project(features)
    t["projector_ms"] = ms_since(start)
    start = time.perf_counter()
    inputs = model.splice(prompt_ids, embeds)
    cache = model.llm.new_cache(len(inputs) + max_tokens)
    logits = model.llm.forward(inputs, cache)
    t["prefill_ms"] = ms_since(start)
    step_times = []
    last = [time.perf_counter()]

    def on_token():
        now = time.perf_counter()
        if "ttft_ms" not in t:
            t["ttft_ms"] = (now - turn_start) * 1e3
        else:
            step_times.append((now - last[0]) * 1e3)
        last[0] = now

    model.decode(logits, cache, max_tokens, on_token)
    t["decode_ms_per_token"] = sum(step_times) / len(step_times) if step_times else 0.0
    t["prompt_tokens"] = len(inputs)
    return t


def main():
    shared = os.environ.get("FASTVLM_SHARED_DIR", "/work/shared")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--image", required=True)
    parser.add_argument("--image-size", type=int, default=0, help="tower input size (default: the model's)")
    parser.add_argument("-n", "--max-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vision-only", action="store_true")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the tower in channels-last memory format (oneDNN's preferred layout)")
    parser.add_argument("--prompt-ids-from", default=os.path.join(shared, "fixtures/tiny-fastvlm/golden/golden.json"))
    args = parser.parse_args()
    if args.max_tokens < 2 or args.reps < 1:
        parser.error("-n must be at least 2 (decode is timed after the first token) and --reps at least 1")

    torch.set_num_threads(args.threads)
    with open(args.prompt_ids_from) as f:
        prompt_ids = json.load(f)["prompt_ids"]
    start = time.perf_counter()
    model = FastVLM(args.model, DTYPES[args.dtype], with_llm=not args.vision_only)
    if args.channels_last:
        model.use_channels_last()
    load_ms = ms_since(start)
    samples = {}
    prompt_tokens = 0
    with torch.no_grad():
        for _ in range(args.reps):
            t = one_turn(model, args.image, prompt_ids, args.max_tokens, args.image_size or None, args.vision_only)
            prompt_tokens = t.pop("prompt_tokens", 0)
            for key, value in t.items():
                samples.setdefault(key, []).append(value)
    timings = {"load_ms": load_ms}
    ranges = {}
    for key, values in samples.items():
        timings[key] = statistics.median(values)
        ranges[key] = [min(values), max(values)]
    print(json.dumps({"peer": "pytorch", "torch_version": torch.__version__, "model": args.model, "dtype": args.dtype,
                      "image_size": args.image_size or model.image_size, "prompt_tokens": prompt_tokens,
                      "generated_tokens": 0 if args.vision_only else args.max_tokens, "reps": args.reps,
                      "threads": args.threads, "channels_last": args.channels_last, "timings": timings, "timings_min_max": ranges,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
