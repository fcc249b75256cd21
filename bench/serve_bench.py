#!/usr/bin/env python3
"""Server throughput benchmark: N concurrent streaming clients against `fastvlm serve` and, for text, against
llama.cpp's llama-server on the same weights as GGUF, alternating the engines run by run (issue 12).

Usage:
    python3 bench/serve_bench.py --model q8=/tmp/fastvlm-bench/fastvlm-0.5b-q8,/work/peers/gguf/fastvlm-0.5b-q8_0.gguf \
        [--model q4=/tmp/fastvlm-bench/fastvlm-0.5b-q4,/tmp/fastvlm-bench/gguf/fastvlm-0.5b-q4_0.gguf] \
        [--workloads text,image,admission] [--clients 1,2,4,8] [--requests 2] [--reps 5] [--threads 2] \
        [--fastvlm build/bin/fastvlm] [--fastvlm-args "--dtype int8"] [--llama-cpp-dir DIR] [--json OUT.json]

--model LABEL=FASTVLM_DIR[,GGUF]: a fastvlm checkpoint and, optionally, the GGUF of the same weights for
llama-server (bench/make_gguf.sh: the q8 / q4 checkpoint's own codes as Q8_0 / Q4_0). llama-server is
$LLAMA_CPP_DIR/build/bin/llama-server (or --llama-cpp-dir); without it, or without a GGUF, only fastvlm runs and
the script says so.

Workloads (each request streams with `stream: true`, temperature 0):
  text       each of N clients sends --requests requests one after another: a prompt of --prompt-tokens tokens
             (ChatML with the default system prompt, then random common words, different per request so that no
             server reuses a cached prefix across requests; the same words for both engines) and
             --max-tokens new tokens. Both engines get logit_bias -100 on the added tokens (<|endoftext|>,
             <|im_start|>, <|im_end|>: a random-weight model cannot end early) and on the ~1.4k tokens that are not
             whole UTF-8 characters on their own (llama-server's output parser fails a stream whose text stays
             invalid UTF-8; without them each token is one content chunk on both servers); llama-server also gets
             ignore_eos. The tokens actually generated come from each response's usage and are reported.
  image      the same with /tmp/fastvlm-bench/image-1024.png as a data URL and "Describe the image." (fastvlm
             only: llama-server has no vision tower for this model).
  admission  K = N text streams (fastvlm, --parallel K+1) are running when one image request is admitted; reports
             the longest gap between two tokens of the running streams from the image request's arrival to its
             first token (issue 12's "admission gap"), and the image request's time to first token.
Servers: `fastvlm serve MODEL --parallel N --threads T --ctx C` and `llama-server -m GGUF -np N -c N*C
--cont-batching -t T -tb T`, each started and stopped by this script for every run, on 127.0.0.1, a free port.

Figures per run: aggregate generated tokens/s (all completion tokens / wall time from the first request to the
last response), TTFT p50/p95 (request sent to first non-empty content chunk), inter-token latency p50/p95 (gaps
between consecutive content chunks of a stream: a chunk can carry more than one token when the server held text
back to complete a UTF-8 character, so tokens/chunk is printed too), and the longest gap in any stream; "prompt" is
the median usage.prompt_tokens (the whole prompt on both servers). Printed:
median [min-max] over --reps runs, and `uptime` before and after.
"""
import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

WORDS = (
    "time year people way day man thing woman life child world school state family student group country problem "
    "hand part place case week company system program question work government number night point home water room "
    "mother area money story fact month lot right study book eye job word business issue side kind head house "
    "service friend father power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war history party result "
    "change morning reason research girl guy moment air teacher force education foot boy age policy music market "
    "sense nation plan college interest death experience effect class control care field development role effort "
    "rate heart drug show leader light voice wife police mind price report decision son view relationship town "
    "road arm difference value building action model season society tax director position player record paper "
    "space ground form event official matter center couple site project activity star table need court oil "
    "situation cost industry figure street image phone data picture practice piece land product doctor wall "
    "patient worker news test movie north love support technology step baby computer type attention film tree "
    "source organization hair window evidence population truth song"
).split()


def byte_decoder():
    """GPT-2 byte-level BPE: the character that stands for each byte in vocab.json, mapped back to the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def banned_tokens(model_dir):
    """(ids both engines must not generate, ids only llama-server must not generate).

    Both: the added tokens (end of turn, end of text, turn start), so that a random-weight model cannot end early or
    emit markup, and every token whose bytes are not valid UTF-8 on their own (partial characters): llama-server's
    output parser answers 500 to text that stays invalid UTF-8, and with whole characters every token is one
    content chunk on both servers, so chunk gaps are inter-token latencies. llama-server only: the padded
    embedding rows past the tokenizer's ids (fastvlm never samples them and refuses them in logit_bias)."""
    with open(os.path.join(model_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    decode = byte_decoder()
    both = set()
    for text, token_id in vocab.items():
        try:
            bytes(decode[c] for c in text).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            both.add(token_id)
    added_path = os.path.join(model_dir, "added_tokens.json")
    if os.path.exists(added_path):
        with open(added_path, encoding="utf-8") as f:
            both |= set(json.load(f).values())
    n_tokenizer = max(list(vocab.values()) + list(both)) + 1
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        vocab_size = json.load(f)["vocab_size"]
    return sorted(both), list(range(n_tokenizer, vocab_size))


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- servers -----------------------------------------------------------------------------------------------

class Server:
    """One server process on 127.0.0.1, stopped on exit whatever happens."""
    running = set()

    def __init__(self, name, argv, port, log_dir):
        self.name, self.port = name, port
        self.log_path = os.path.join(log_dir, f"{name}-{port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        Server.running.add(self)

    def wait_ready(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting; log: {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout} s; log: {self.log_path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Server.running.discard(self)

    @classmethod
    def stop_all(cls):
        for server in list(cls.running):
            server.stop()


def start_fastvlm(args, model_dir, parallel, ctx, log_dir):
    port = free_port()
    argv = [args.fastvlm, "serve", "-m", model_dir, "-q", "--port", str(port), "--parallel", str(parallel),
            "--threads", str(args.threads), "--ctx", str(ctx), "--queue", "64"] + args.fastvlm_args.split()
    return Server("fastvlm", argv, port, log_dir)


def start_llama(args, gguf, parallel, ctx, log_dir):
    port = free_port()
    argv = [args.llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
            "-c", str(parallel * ctx), "--cont-batching", "-t", str(args.threads), "-tb", str(args.threads),
            "--no-webui"] + args.llama_args.split()
    return Server("llama-server", argv, port, log_dir)


# ---- one streaming request ---------------------------------------------------------------------------------

class StreamResult:
    def __init__(self):
        self.sent = None          # perf_counter when the request went out
        self.chunk_times = []     # arrival of each non-empty content chunk
        self.completion_tokens = None
        self.prompt_tokens = None
        self.error = None

    @property
    def ttft(self):
        return self.chunk_times[0] - self.sent if self.chunk_times else None

    def gaps(self):
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]


def stream_chat(port, body, result, timeout=900):
    """POSTs a streaming chat completion and records when each content chunk arrives."""
    payload = json.dumps(body).encode()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        result.sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            result.error = f"HTTP {resp.status}: {resp.read()[:300]!r}"
            return result
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            now = time.perf_counter()
            chunk = json.loads(data)
            if "error" in chunk:
                result.error = str(chunk["error"])[:300]
                break
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    result.chunk_times.append(now)
            usage = chunk.get("usage")
            if usage:
                result.completion_tokens = usage.get("completion_tokens")
                result.prompt_tokens = usage.get("prompt_tokens")
        conn.close()
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


# ---- workloads ---------------------------------------------------------------------------------------------

class Workload:
    def __init__(self, args, model_dir):
        self.args = args
        both, llama_only = banned_tokens(model_dir)
        self.bias = {"fastvlm": {str(i): -100 for i in both},
                     "llama": {str(i): -100 for i in both + llama_only}}
        self.n_banned = len(both)
        self.content_words = args.prompt_tokens - args.chat_overhead
        with open(args.image, "rb") as f:
            self.png = f.read()
        self.image_urls = {}

    def text_body(self, seed, max_tokens, engine):
        rng = random.Random(seed)
        words = "".join(" " + rng.choice(WORDS) for _ in range(self.content_words))  # one token each
        return self._body([{"role": "user", "content": words}], max_tokens, engine)

    def image_url(self, index):
        """A data URL of the image with its last pixel changed by `index`: every request of a run has its own
        pixels, so the server's image-embedding cache and prefix reuse cannot skip the vision encode."""
        if index not in self.image_urls:
            self.image_urls[index] = "data:image/png;base64," + base64.b64encode(png_variant(self.png, index)).decode()
        return self.image_urls[index]

    def image_body(self, index, max_tokens, engine):
        content = [{"type": "image_url", "image_url": {"url": self.image_url(index)}},
                   {"type": "text", "text": "Describe the image."}]
        return self._body([{"role": "user", "content": content}], max_tokens, engine)

    def _body(self, messages, max_tokens, engine):
        body = {"model": "bench", "messages": messages, "stream": True, "max_tokens": max_tokens,
                "temperature": 0, "stream_options": {"include_usage": True},
                "logit_bias": self.bias[engine]}
        if engine == "llama":
            body["ignore_eos"] = True
        return body


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_variant(png, index):
    """The PNG with the last byte of its last scanline XORed with index + 1 (1..255): only the last pixel changes,
    since no filtered byte depends on one to its right or below it."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("--image must be a PNG")
    pos, ihdr, idat = 8, None, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = data
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    if ihdr is None or ihdr[8] != 8 or ihdr[12] != 0:
        raise ValueError("--image must be an 8-bit, non-interlaced PNG")
    raw = bytearray(zlib.decompress(idat))
    raw[-1] ^= index % 255 + 1
    return png[:8] + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(bytes(raw), 1)) + png_chunk(b"IEND", b"")


def run_clients(port, bodies_per_client):
    """Each client thread sends its requests one after another; returns (results, wall seconds)."""
    results = [[StreamResult() for _ in bodies] for bodies in bodies_per_client]

    def client(i):
        for body, result in zip(bodies_per_client[i], results[i]):
            stream_chat(port, body, result)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies_per_client))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for rs in results for r in rs], time.perf_counter() - start


def summarize_run(results, wall):
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed, first: {errors[0]}")
    tokens = sum(r.completion_tokens or len(r.chunk_times) for r in results)
    chunks = sum(len(r.chunk_times) for r in results)
    gaps = [g for r in results for g in r.gaps()]
    ttfts = [r.ttft for r in results]
    return {
        "tok_s": tokens / wall,
        "ttft_p50_ms": 1e3 * percentile(ttfts, 50), "ttft_p95_ms": 1e3 * percentile(ttfts, 95),
        "itl_p50_ms": 1e3 * percentile(gaps, 50) if gaps else float("nan"),
        "itl_p95_ms": 1e3 * percentile(gaps, 95) if gaps else float("nan"),
        "max_gap_ms": 1e3 * max(gaps) if gaps else float("nan"),
        "tokens_per_request": tokens / len(results), "tokens_per_chunk": tokens / max(chunks, 1),
        "prompt_tokens": statistics.median([r.prompt_tokens or 0 for r in results]),
        "wall_s": wall,
    }


def bench_text_or_image(args, workload, kind, engine, port, n, rep):
    def body(client, request):
        if kind == "image":
            return workload.image_body(1 + client * args.requests + request, args.max_tokens, engine)
        return workload.text_body(1000000 * rep + 1000 * client + request, args.max_tokens, engine)
    warm = workload.image_body(0, 2, engine) if kind == "image" else workload.text_body(-1, 2, engine)
    stream_chat(port, warm, StreamResult())  # first-use costs are not the steady state being measured
    bodies = [[body(c, r) for r in range(args.requests)] for c in range(n)]
    return summarize_run(*run_clients(port, bodies))


def bench_admission(args, workload, port, k, rep):
    stream_chat(port, workload.image_body(0, 2, "fastvlm"), StreamResult())
    image_body = workload.image_body(1, args.max_tokens, "fastvlm")
    texts = [StreamResult() for _ in range(k)]
    threads = [threading.Thread(target=stream_chat,
                                args=(port, workload.text_body(1000000 * rep + 999000 + i, args.admission_tokens, "fastvlm"),
                                      texts[i]))
               for i in range(k)]
    for t in threads:
        t.start()
    # Admit the image once every stream is decoding steadily.
    deadline = time.time() + 600
    while any(len(r.chunk_times) < 8 and not r.error for r in texts) and time.time() < deadline:
        time.sleep(0.01)
    image = stream_chat(port, image_body, StreamResult())
    for t in threads:
        t.join()
    errors = [r.error for r in texts + [image] if r.error]
    if errors:
        raise RuntimeError(f"admission run failed: {errors[0]}")
    window = (image.sent, image.chunk_times[0])
    gaps_in_window = [b - a for r in texts for a, b in zip(r.chunk_times, r.chunk_times[1:])
                      if b > window[0] and a < window[1]]
    covered = all(r.chunk_times[-1] >= window[1] for r in texts)
    steady = [b - a for r in texts for a, b in zip(r.chunk_times, r.chunk_times[1:]) if b <= window[0]]
    return {
        "max_gap_ms": 1e3 * max(gaps_in_window) if gaps_in_window else float("nan"),
        "image_ttft_ms": 1e3 * (window[1] - window[0]),
        "itl_before_p50_ms": 1e3 * percentile(steady, 50) if steady else float("nan"),
        "streams_covered_window": covered,
    }


# ---- driver ------------------------------------------------------------------------------------------------

def fmt(values, digits=1):
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def parse_models(parser, specs):
    """--model LABEL=FASTVLM_DIR[,GGUF] (repeatable) -> [(label, fastvlm_dir, gguf or "")]; bench/llama_peer.py too."""
    models = []
    for spec in specs:
        label, sep, paths = spec.partition("=")
        if not sep:
            parser.error(f"--model {spec!r}: expected LABEL=FASTVLM_DIR[,GGUF]")
        fastvlm_dir, _, gguf = paths.partition(",")
        if not os.path.isfile(os.path.join(fastvlm_dir, "config.json")):
            parser.error(f"--model {label}: {fastvlm_dir} has no config.json")
        if gguf and not os.path.isfile(gguf):
            parser.error(f"--model {label}: GGUF {gguf} does not exist")
        models.append((label, fastvlm_dir, gguf))
    return models


def llama_cpp_tool(llama_cpp_dir, name):
    """The path of llama.cpp's NAME binary under LLAMA_CPP_DIR/build/bin, or "" (and a note) when it is not built."""
    path = os.path.join(llama_cpp_dir, "build", "bin", name) if llama_cpp_dir else ""
    if path and os.access(path, os.X_OK):
        return path
    print(f"{name} not found (LLAMA_CPP_DIR/--llama-cpp-dir = {llama_cpp_dir!r}): "
          f"the llama.cpp peer is skipped, fastvlm runs alone")
    return ""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", action="append", required=True, metavar="LABEL=FASTVLM_DIR[,GGUF]")
    p.add_argument("--workloads", default="text,image,admission")
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=512, help="positions per slot")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--chat-overhead", type=int, default=19,
                   help="tokens the ChatML markup and default system prompt add to a one-word-per-token message")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--admission-tokens", type=int, default=384, help="max_tokens of the running text streams")
    p.add_argument("--image", default="/tmp/fastvlm-bench/image-1024.png")
    p.add_argument("--fastvlm", default="build/bin/fastvlm")
    p.add_argument("--fastvlm-args", default="--dtype int8", help="extra flags for fastvlm serve")
    p.add_argument("--llama-cpp-dir", default=os.environ.get("LLAMA_CPP_DIR", ""))
    p.add_argument("--llama-args", default="", help="extra flags for llama-server")
    p.add_argument("--json", help="write every run's figures here")
    args = p.parse_args()
    clients = [int(x) for x in args.clients.split(",")]
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in ("text", "image", "admission"):
            p.error(f"--workloads: unknown workload {w!r}")

    models = parse_models(p, args.model)
    if not os.access(args.fastvlm, os.X_OK):
        p.error(f"--fastvlm {args.fastvlm}: not an executable (build it: cmake --build build --target fastvlm)")
    args.llama_server = llama_cpp_tool(args.llama_cpp_dir, "llama-server")

    log_dir = tempfile.mkdtemp(prefix="serve_bench.")
    print(f"machine: {cpu_model()}; threads {args.threads}; server logs in {log_dir}")
    print(f"uptime before: {uptime()}")
    records = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        for label, fastvlm_dir, gguf in models:
            workload = Workload(args, fastvlm_dir)
            print(f"{label}: {workload.n_banned} token ids banned (logit_bias -100) on both engines")
            engines = [("fastvlm", fastvlm_dir)] + ([("llama", gguf)] if gguf and args.llama_server else [])
            for kind in workloads:
                for n in clients:
                    for rep in range(args.reps):
                        order = engines if rep % 2 == 0 else engines[::-1]
                        for engine, weights in order:
                            if kind != "text" and engine == "llama":
                                continue
                            record = run_one(args, workload, kind, engine, weights, n, rep, log_dir)
                            record.update(model=label, workload=kind, engine=engine, clients=n, rep=rep)
                            records.append(record)
                            print(f"  {label} {kind} N={n} rep {rep} {engine}: " +
                                  ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in record.items() if k not in ("model", "workload", "engine", "clients", "rep")),
                                  flush=True)
    finally:
        Server.stop_all()
        print(f"uptime after: {uptime()}")
    report(records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": cpu_model(), "args": vars(args), "runs": records}, f, indent=1)


def run_one(args, workload, kind, engine, weights, n, rep, log_dir):
    if kind == "admission":
        server = start_fastvlm(args, weights, n + 1, max(args.ctx, args.prompt_tokens + args.admission_tokens + 8), log_dir)
    elif engine == "fastvlm":
        server = start_fastvlm(args, weights, n, args.ctx, log_dir)
    else:
        server = start_llama(args, weights, n, args.ctx, log_dir)
    try:
        server.wait_ready()
        if kind == "admission":
            return bench_admission(args, workload, server.port, n, rep)
        return bench_text_or_image(args, workload, kind, engine, server.port, n, rep)
    finally:
        server.stop()


def report(records):
    print()
    print("medians [min-max] over repetitions")
    groups = {}
    for r in records:
        groups.setdefault((r["model"], r["workload"]), {}).setdefault((r["clients"], r["engine"]), []).append(r)
    for (model, kind), rows in groups.items():
        print(f"\n{model} {kind}")
        if kind == "admission":
            print(f"{'K':>3} {'max gap ms (image admitted)':>30} {'image TTFT ms':>26} {'ITL p50 before ms':>24}")
            for (n, engine), rs in sorted(rows.items()):
                print(f"{n:>3} {fmt([r['max_gap_ms'] for r in rs]):>30} {fmt([r['image_ttft_ms'] for r in rs]):>26} "
                      f"{fmt([r['itl_before_p50_ms'] for r in rs]):>24}")
                if not all(r["streams_covered_window"] for r in rs):
                    print("    (some text streams ended before the image's first token: raise --admission-tokens)")
            continue
        print(f"{'N':>3} {'engine':<8} {'tok/s':>22} {'TTFT p50 ms':>22} {'TTFT p95 ms':>22} {'ITL p50 ms':>20} "
              f"{'ITL p95 ms':>20} {'max gap ms':>22} {'tok/req':>7} {'tok/chunk':>9} {'prompt':>6}")
        for (n, engine), rs in sorted(rows.items()):
            print(f"{n:>3} {engine:<8} {fmt([r['tok_s'] for r in rs]):>22} {fmt([r['ttft_p50_ms'] for r in rs]):>22} "
                  f"{fmt([r['ttft_p95_ms'] for r in rs]):>22} {fmt([r['itl_p50_ms'] for r in rs]):>20} "
                  f"{fmt([r['itl_p95_ms'] for r in rs]):>20} {fmt([r['max_gap_ms'] for r in rs]):>22} "
                  f"{statistics.median([r['tokens_per_request'] for r in rs]):>7.1f} "
                  f"{statistics.median([r['tokens_per_chunk'] for r in rs]):>9.2f} "
                  f"{statistics.median([r['prompt_tokens'] for r in rs]):>6.0f}")
        ones = {e: statistics.median([r["tok_s"] for r in rs]) for (n, e), rs in rows.items() if n == min(k[0] for k in rows)}
        for (n, engine), rs in sorted(rows.items()):
            med = statistics.median([r["tok_s"] for r in rs])
            line = f"    N={n} {engine}: {med / ones[engine]:.2f}x its N={min(k[0] for k in rows)} tok/s"
            if engine == "fastvlm" and (n, "llama") in rows:
                line += f", {med / statistics.median([r['tok_s'] for r in rows[(n, 'llama')]]):.2f}x llama-server"
            print(line)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
