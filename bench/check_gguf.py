#!/usr/bin/env python3
"""Checks that bench/export_gguf.py is faithful: llama.cpp, running the exported tiny Qwen2 fixture, must tokenize
every golden prompt to the golden prompt ids and generate the golden greedy tokens (goldens made by an
independent PyTorch reference, /work/shared/fixtures/tiny-qwen2-text/README.md). Not a ctest: CI has no llama.cpp.

Usage:
    LLAMA_CPP_DIR=/path/to/llama.cpp python3 bench/check_gguf.py [--fixture DIR] [--keep OUT.gguf]

Needs $LLAMA_CPP_DIR/build/bin/llama-server (or --llama-cpp-dir); without it, prints that the check was skipped
and exits 0. Exports the fixture as an f32 GGUF (exact: the fixture is bf16) into a temporary directory, starts
llama-server on 127.0.0.1 (one slot, 2 threads), asks /tokenize for each case's text and /completion for
the greedy tokens, one at a time, from the golden prompt ids, with the padded vocabulary rows past the tokenizer's ids
banned (the goldens take the argmax over the tokenizer's ids only), then stops the server. Exit status 0 when
every case matches, 1 otherwise.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture", default=DEFAULT_FIXTURE)
    p.add_argument("--llama-cpp-dir", default=os.environ.get("LLAMA_CPP_DIR", ""))
    p.add_argument("--keep", help="also keep the exported GGUF here")
    args = p.parse_args()
    server_bin = os.path.join(args.llama_cpp_dir, "build", "bin", "llama-server")
    if not args.llama_cpp_dir or not os.access(server_bin, os.X_OK):
        print(f"check_gguf: skipped: no llama-server at {server_bin!r} (set LLAMA_CPP_DIR to a llama.cpp build)")
        return 0

    golden = json.load(open(os.path.join(args.fixture, "golden", "golden.json"), encoding="utf-8"))
    vocab_size = json.load(open(os.path.join(args.fixture, "config.json")))["vocab_size"]
    padded_rows = [[i, False] for i in range(tokenizer_size(args.fixture), vocab_size)]

    work = tempfile.mkdtemp(prefix="check_gguf.")
    gguf = args.keep or os.path.join(work, "fixture-f32.gguf")
    subprocess.run([sys.executable, os.path.join(HERE, "export_gguf.py"), args.fixture, gguf, "--outtype", "f32"],
                   check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = os.path.join(work, "llama-server.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([server_bin, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", "1",
                                 "-c", "2048", "-t", "2", "--no-webui"], stdout=log, stderr=subprocess.STDOUT)
    failures = 0
    try:
        wait_ready(proc, port, log_path)
        for case in golden["cases"]:
            name = case["case"]
            ids = post(port, "/tokenize", {"content": case["text"], "add_special": False,
                                           "parse_special": True})["tokens"]
            if ids != case["prompt_ids"]:
                first = next((i for i, (a, b) in enumerate(zip(ids, case["prompt_ids"])) if a != b),
                             min(len(ids), len(case["prompt_ids"])))
                print(f"{name}: tokenization differs at position {first} ({len(ids)} vs {len(case['prompt_ids'])} ids)")
                failures += 1
            else:
                print(f"{name}: tokenization matches ({len(ids)} ids)")
            want = case["tokens"]
            # One token per request (the server keeps the KV cache of the prompt so far): a whole answer of random
            # tokens can be invalid UTF-8, which llama-server's output parser refuses with a 500.
            got = []
            for _ in want:
                out = post(port, "/completion", {"prompt": case["prompt_ids"] + got, "n_predict": 1, "temperature": 0,
                                                 "return_tokens": True, "cache_prompt": True,
                                                 "logit_bias": padded_rows})
                got += out.get("tokens", [])
            if got != want:
                print(f"{name}: greedy tokens differ\n  llama.cpp {got}\n  golden    {want}")
                failures += 1
            else:
                print(f"{name}: {len(want)} greedy tokens match the golden")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print("check_gguf: " + ("PASS" if failures == 0 else f"FAIL ({failures} mismatches; server log {log_path})"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
