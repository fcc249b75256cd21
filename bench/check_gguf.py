#!/usr/bin/env python3
"""Checks that bench/export_gguf.py is faithful. Not a ctest: CI has no llama.cpp.

  f32:    llama.cpp, running the tiny Qwen2 fixture exported as f32 (exact: the fixture is bf16), must tokenize
          every golden prompt to the golden prompt ids and generate the golden greedy tokens (goldens made by an
          independent PyTorch reference, /work/shared/fixtures/tiny-qwen2-text/README.md).
  q8, q4: the fixture quantised by `fastvlm quantize --type q8|q4`, exported straight to a Q8_0 / Q4_0 GGUF (no
          llama-quantize: the same codes and scales): llama.cpp must generate the greedy tokens `fastvlm run
          --dtype f32` generates on that quantised checkpoint, for every golden prompt. Both run the same
          weights and both round the activations to blocks of 32 int8 codes (127 / max|x|, to nearest) inside
          their Q8_0/Q4_0 products, but llama.cpp keeps each block's scale as a half where fastvlm keeps a float,
          and its KV cache in f16: a step whose top two logits are nearly tied can legitimately flip. A mismatch
          is reported with fastvlm's top-1/top-2 log-probability margin at that step and the largest difference
          in the chosen token's log-probability over the steps before (how far apart the two engines are); it
          passes, as a near tie, only after at least one matching step and with that margin at most twice that
          difference.

Usage:
    LLAMA_CPP_DIR=/path/to/llama.cpp python3 bench/check_gguf.py [--types f32,q8,q4] [--fixture DIR]
                                                                [--fastvlm build/bin/fastvlm] [--keep DIR]

Needs $LLAMA_CPP_DIR/build/bin/llama-server (or --llama-cpp-dir); without it, prints that the check was skipped
and exits 0. q8/q4 need the fastvlm binary (default build/bin/fastvlm of this checkout). Writes the GGUFs (and
the quantised checkpoints) into a temporary directory, or DIR with --keep; per type, starts llama-server on
127.0.0.1 (one slot, 2 threads), asks /tokenize for each case's text and /completion for the greedy tokens, one
at a time, from the golden prompt ids, with the padded vocabulary rows past the tokenizer's ids banned (the
goldens and fastvlm take the argmax over the tokenizer's ids only), then stops the server. Exit status 0 when
every case matches, 1 otherwise.
"""
import argparse
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_FIXTURE = "/work/shared/fixtures/tiny-qwen2-text"


def post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:300]!r}")
    return json.loads(data)


def wait_ready(proc, port, log_path, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}; log: {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"llama-server not ready after {timeout} s; log: {log_path}")


def tokenizer_size(fixture):
    ids = list(json.load(open(os.path.join(fixture, "vocab.json"), encoding="utf-8")).values())
    added = os.path.join(fixture, "added_tokens.json")
    if os.path.exists(added):
        ids += list(json.load(open(added, encoding="utf-8")).values())
    config = os.path.join(fixture, "tokenizer_config.json")
    if os.path.exists(config):
        ids += [int(i) for i in json.load(open(config, encoding="utf-8")).get("added_tokens_decoder", {})]
    return max(ids) + 1



@contextlib.contextmanager
def llama_server(server_bin, gguf, work):
    """A llama-server on `gguf`, stopped on the way out; yields its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = os.path.join(work, os.path.basename(gguf) + ".server.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([server_bin, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", "1",
                                 "-c", "2048", "-t", "2", "--no-webui"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, port, log_path)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def llama_greedy(port, prompt_ids, count, banned):
    """llama.cpp's greedy tokens after prompt_ids, with each chosen token's log-probability."""
    # One token per request (the server keeps the KV cache of the prompt so far): a whole answer of random
    # tokens can be invalid UTF-8, which llama-server's output parser refuses with a 500.
    tokens, logprobs = [], []
    for _ in range(count):
        out = post(port, "/completion", {"prompt": prompt_ids + tokens, "n_predict": 1, "temperature": 0,
                                         "return_tokens": True, "cache_prompt": True, "logit_bias": banned,
                                         "n_probs": 1})
        tokens += out.get("tokens", [])
        probs = out.get("completion_probabilities") or [{}]
        logprobs.append(probs[0].get("logprob"))
    return tokens, logprobs


def fastvlm_greedy(fastvlm, model_dir, case, count):
    """fastvlm's greedy tokens on case's text (raw, no template), with its top-2 log-probabilities per step."""
    out = subprocess.run([fastvlm, "run", "-m", model_dir, "--dtype", "f32", "--raw", "-p", case["text"], "--json",
                          "-n", str(count), "--temp", "0", "--threads", "2", "--logprobs", "2", "-q"],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    if result["prompt_ids"] != case["prompt_ids"]:
        raise RuntimeError(f"{case['case']}: fastvlm tokenized the prompt differently from the golden")
    return result["token_ids"], [[t["logprob"] for t in step["top_logprobs"]] for step in result["logprobs"]]


def check_type(kind, args, server_bin, golden, banned, work):
    """Number of mismatches of one GGUF type against its expected tokens."""
    export = [sys.executable, os.path.join(HERE, "export_gguf.py")]
    if kind == "f32":
        model_dir = args.fixture
    else:
        model_dir = os.path.join(work, f"fixture-{kind}")
        if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
            subprocess.run([args.fastvlm, "quantize", "-m", args.fixture, "-o", model_dir, "--type", kind],
                           check=True, stdout=subprocess.DEVNULL)
    gguf = os.path.join(work, f"fixture-{kind}.gguf")
    subprocess.run(export + [model_dir, gguf, "--outtype", "f32"], check=True)
    failures = 0
    with llama_server(server_bin, gguf, work) as port:
        for case in golden["cases"]:
            name = f"{kind} {case['case']}"
            ids = post(port, "/tokenize", {"content": case["text"], "add_special": False,
                                           "parse_special": True})["tokens"]
            if ids != case["prompt_ids"]:
                first = next((i for i, (a, b) in enumerate(zip(ids, case["prompt_ids"])) if a != b),
                             min(len(ids), len(case["prompt_ids"])))
                print(f"{name}: tokenization differs at position {first} ({len(ids)} vs {len(case['prompt_ids'])} ids)")
                failures += 1
            if kind == "f32":
                want, top2, source = case["tokens"], None, "the golden"
            else:
                want, top2 = fastvlm_greedy(args.fastvlm, model_dir, case, len(case["tokens"]))
                source = "fastvlm"
            got, logprobs = llama_greedy(port, case["prompt_ids"], len(want), banned)
            same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
            closeness, spread = "", None
            if top2:
                diffs = [abs(logprobs[i] - top2[i][0]) for i in range(same) if logprobs[i] is not None]
                if diffs:
                    spread = max(diffs)
                    closeness = f"; chosen-token log-probabilities within {spread:.2e} of fastvlm's"
            if got != want:
                margin = None
                if top2 and same < len(top2) and len(top2[same]) == 2:
                    margin = top2[same][0] - top2[same][1]
                # A flip where fastvlm's top two are closer than the two engines' disagreement on the steps before
                # is the activation rounding at work, not a different weight; anything else is a failure.
                explained = margin is not None and spread is not None and margin <= 2 * spread
                print(f"{name}: greedy tokens differ from step {same}"
                      + (f" (fastvlm's top-1/top-2 log-probability margin there: {margin:.3g})" if margin is not None else "")
                      + closeness + ("; explained: a near tie, within twice that" if explained else "")
                      + f"\n  llama.cpp {got}\n  {source:9} {want}")
                failures += 0 if explained else 1
            else:
                print(f"{name}: {len(want)} greedy tokens match {source}{closeness}")
    return failures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", default="f32,q8,q4", help="comma-separated: f32, q8, q4 (default all three)")
    p.add_argument("--fixture", default=DEFAULT_FIXTURE)
    p.add_argument("--llama-cpp-dir", default=os.environ.get("LLAMA_CPP_DIR", ""))
    p.add_argument("--fastvlm", default=os.path.join(REPO, "build", "bin", "fastvlm"))
    p.add_argument("--keep", help="write the GGUFs, quantised checkpoints and server logs here, and keep them")
    args = p.parse_args()
    kinds = args.types.split(",")
    unknown = [k for k in kinds if k not in ("f32", "q8", "q4")]
    if unknown:
        p.error(f"--types: {unknown[0]!r} is not f32, q8 or q4")
    server_bin = os.path.join(args.llama_cpp_dir, "build", "bin", "llama-server")
    if not args.llama_cpp_dir or not os.access(server_bin, os.X_OK):
        print(f"check_gguf: skipped: no llama-server at {server_bin!r} (set LLAMA_CPP_DIR to a llama.cpp build)")
        return 0
    if any(k != "f32" for k in kinds) and not os.access(args.fastvlm, os.X_OK):
        print(f"check_gguf: no fastvlm at {args.fastvlm!r} (build the fastvlm target or pass --fastvlm)",
              file=sys.stderr)
        return 1

    golden = json.load(open(os.path.join(args.fixture, "golden", "golden.json"), encoding="utf-8"))
    vocab_size = json.load(open(os.path.join(args.fixture, "config.json")))["vocab_size"]
    banned = [[i, False] for i in range(tokenizer_size(args.fixture), vocab_size)]
    work = args.keep or tempfile.mkdtemp(prefix="check_gguf.")
    os.makedirs(work, exist_ok=True)
    failures = sum(check_type(kind, args, server_bin, golden, banned, work) for kind in kinds)
    print("check_gguf: " + ("PASS" if failures == 0 else f"FAIL ({failures} mismatches; server logs in {work})"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
