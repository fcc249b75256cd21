#!/usr/bin/env python3
"""Prefill and decode of the LLM half, fastvlm beside llama.cpp on the same weights, alternating (issue 16).

Usage:
    LLAMA_CPP_DIR=/path/to/llama.cpp python3 bench/llama_peer.py \
        --model q8=/tmp/fastvlm-bench/fastvlm-0.5b-q8,/work/peers/gguf/fastvlm-0.5b-q8_0.gguf \
        [--model q4=/tmp/fastvlm-bench/fastvlm-0.5b-q4,/tmp/fastvlm-bench/gguf/fastvlm-0.5b-q4_0.gguf] \
        [--rounds 5] [--reps 3] [--threads 2] [--positions 280] [--decode 64] \
        [--fastvlm build/bin/fastvlm] [--fastvlm-args "--dtype int8"] [--llama-args ""] [--image IMAGE] [--json OUT.json]

--model LABEL=FASTVLM_DIR,GGUF pairs a fastvlm checkpoint with the GGUF of the same weights (bench/make_gguf.sh:
bench/export_gguf.py writes a q8 / q4 checkpoint's own codes and scales as Q8_0 / Q4_0). Without llama.cpp
($LLAMA_CPP_DIR/build/bin/llama-bench, or --llama-cpp-dir) only fastvlm runs, and the script says so.

Each round runs, in an order that swaps every round:
  fastvlm   `fastvlm bench FASTVLM_DIR --image IMAGE -n DECODE --reps REPS --threads T --json --no-accuracy`:
            workload W, whose prompt is the image's 256 embeddings plus the question's tokens (280 positions for
            FastVLM-0.5B); prefill_ms is the LLM over those positions, decode_ms_per_token the steps after
            them (the median over REPS; a random-weight model may end its answer early, it is then per token
            of what it generated).
  llama.cpp `llama-bench -m GGUF -p POSITIONS -n 0 -t T -r REPS` (prefill from an empty cache) and
            `llama-bench -m GGUF -p 0 -n DECODE -d POSITIONS -t T -r REPS` (decode DECODE tokens at depth
            POSITIONS), the median of each one's samples.
The table gives, per model, the median [min-max] over rounds and the ratio llama.cpp / fastvlm (above 1: fastvlm
is faster). `uptime` is printed before and after. Prints the prompt length fastvlm reported so that --positions
can be matched to it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from serve_bench import cpu_model, fmt, llama_cpp_tool, parse_models, uptime  # one definition of these helpers


def run_json(argv, what):
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def fastvlm_round(args, model_dir):
    out = run_json([args.fastvlm, "bench", "-m", model_dir, "--image", args.image, "-n", str(args.decode),
                    "--reps", str(args.reps), "--threads", str(args.threads), "--json", "--no-accuracy"]
                   + args.fastvlm_args.split(), "fastvlm bench")
    t = out["timings"]
    return {"prefill_ms": t["prefill_ms"], "decode_ms": t["decode_ms_per_token"],
            "prompt_tokens": out["prompt_tokens"], "generated": out["generated_tokens"]}


def llama_round(args, gguf):
    def median_ms(test_args, tokens):
        out = run_json([args.llama_bench, "-m", gguf, "-t", str(args.threads), "-r", str(args.reps), "-o", "json"]
                       + args.llama_args.split() + test_args, "llama-bench")
        return statistics.median(out[0]["samples_ns"]) / 1e6 / tokens
    prefill = median_ms(["-p", str(args.positions), "-n", "0"], 1)
    decode = median_ms(["-p", "0", "-n", str(args.decode), "-d", str(args.positions)], args.decode)
    return {"prefill_ms": prefill, "decode_ms": decode}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", action="append", required=True, metavar="LABEL=FASTVLM_DIR[,GGUF]")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="repetitions inside each engine's run of a round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--positions", type=int, default=280, help="prefill length and decode depth for llama-bench")
    p.add_argument("--decode", type=int, default=64, help="tokens decoded")
    p.add_argument("--image", default="/tmp/fastvlm-bench/image-1024.png")
    p.add_argument("--fastvlm", default="build/bin/fastvlm")
    p.add_argument("--fastvlm-args", default="--dtype int8", help="extra flags for fastvlm bench")
    p.add_argument("--llama-cpp-dir", default=os.environ.get("LLAMA_CPP_DIR", ""))
    p.add_argument("--llama-args", default="", help='extra flags for llama-bench, e.g. "--poll 0" on a busy machine')
    p.add_argument("--json", help="write every round's figures here")
    args = p.parse_args()

    models = parse_models(p, args.model)
    if not os.access(args.fastvlm, os.X_OK):
        p.error(f"--fastvlm {args.fastvlm}: not an executable (cmake --build build --target fastvlm)")
    args.llama_bench = llama_cpp_tool(args.llama_cpp_dir, "llama-bench")

    print(f"machine: {cpu_model()}; threads {args.threads}")
    print(f"uptime before: {uptime()}")
    results = {}
    for label, fastvlm_dir, gguf in models:
        engines = [("fastvlm", lambda d=fastvlm_dir: fastvlm_round(args, d))]
        if gguf and args.llama_bench:
            engines.append(("llama.cpp", lambda g=gguf: llama_round(args, g)))
        for rnd in range(args.rounds):
            for engine, run in (engines if rnd % 2 == 0 else engines[::-1]):
                r = run()
                results.setdefault(label, {}).setdefault(engine, []).append(r)
                print(f"  {label} round {rnd + 1} {engine}: prefill {r['prefill_ms']:.1f} ms, "
                      f"decode {r['decode_ms']:.2f} ms/token", flush=True)
    print(f"uptime after: {uptime()}")

    print("\nmedians [min-max] over rounds; ratio = llama.cpp / fastvlm (above 1: fastvlm faster)")
    print(f"{'model':<6} {'engine':<10} {'prefill ms':>24} {'decode ms/token':>24}")
    for label, engines in results.items():
        for engine, rs in engines.items():
            print(f"{label:<6} {engine:<10} {fmt([r['prefill_ms'] for r in rs]):>24} "
                  f"{fmt([r['decode_ms'] for r in rs], 2):>24}")
        f = engines["fastvlm"]
        print(f"{'':<6} {'':<10} fastvlm prompt {statistics.median([r['prompt_tokens'] for r in f]):.0f} positions, "
              f"{statistics.median([r['generated'] for r in f]):.0f} tokens generated")
        if "llama.cpp" in engines:
            l = engines["llama.cpp"]
            ratio = lambda key: statistics.median([r[key] for r in l]) / statistics.median([r[key] for r in f])
            print(f"{label:<6} {'ratio':<10} {ratio('prefill_ms'):>24.2f} {ratio('decode_ms'):>24.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": cpu_model(), "args": vars(args), "results": results}, out, indent=1)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print(f"llama_peer: {e}", file=sys.stderr)
        sys.exit(1)
