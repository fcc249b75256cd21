#!/usr/bin/env bash
# What a json_schema costs per generated token (issue 15: at most 15% more than free text), as a client of
# `fastvlm serve` sees it: streamed requests, from the first to the last token chunk divided by the tokens
# after the first, both in wall time and in the server process's CPU time (user + sys from /proc, which a
# machine shared with other work disturbs less). Per round, three requests of MAX_TOKENS tokens at
# temperature 0:
#   free   no response_format;
#   first  a schema the server has not seen (its text differs per round), so every mask is computed;
#   warm   the same schema again, every mask from the cache.
# Prints each round and then the medians with min-max. Workload W's q8 model by default (bench/workload_w.sh).
#   bash bench/schema_cost.sh [ROUNDS] [MODEL] [MAX_TOKENS]      (defaults 5, /tmp/fastvlm-bench/fastvlm-0.5b-q8, 64)
# Environment: FASTVLM_BIN (build/bin/fastvlm), DTYPE (int8), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
model=${2:-/tmp/fastvlm-bench/fastvlm-0.5b-q8}
max_tokens=${3:-64}
bin=${FASTVLM_BIN:-build/bin/fastvlm}
log=$(mktemp)
"$bin" serve -m "$model" --dtype "${DTYPE:-int8}" --threads "${THREADS:-2}" --port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 600); do
  grep -q "listening on" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
url=$(grep -o "http://127.0.0.1:[0-9]*" "$log" | head -1)
echo "uptime before: $(uptime)" >&2
python3 - "$url" "$rounds" "$max_tokens" "$server" <<'PY'
import http.client, json, os, statistics, sys, time, urllib.parse

url, rounds, max_tokens, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
host = urllib.parse.urlparse(url)
tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

def server_cpu_ms():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * tick_ms  # utime, stime

def schema(round_):
    # Strings, an integer, an enum and an array of objects: bounded so that it completes, long enough
    # that the answer fills max_tokens. The description differs per round so the server sees a new schema.
    item = {"type": "object", "additionalProperties": False, "required": ["name", "price"],
            "properties": {"name": {"type": "string", "minLength": 3, "maxLength": 30},
                           "price": {"type": "number", "minimum": 0, "maximum": 10000}}}
    return {"type": "object", "additionalProperties": False, "description": f"round {round_}",
            "required": ["store", "date", "items", "total", "paid"],
            "properties": {"store": {"type": "string", "minLength": 10, "maxLength": 60},
                           "date": {"type": "string", "format": "date"},
                           "items": {"type": "array", "items": item, "minItems": 4, "maxItems": 8},
                           "total": {"type": "integer", "minimum": 0, "maximum": 100000},
                           "paid": {"enum": ["cash", "card", "other"]}}}

def ms_per_token(response_format):
    body = {"messages": [{"role": "user", "content": "Read the receipt into JSON."}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if response_format:
        body["response_format"] = response_format
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    first = last = None
    cpu_first = cpu_last = 0
    tokens = 0
    for line in response:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            last, cpu_last = time.perf_counter(), server_cpu_ms()
            if first is None:
                first, cpu_first = last, cpu_last
    conn.close()
    assert tokens > max_tokens // 2, f"only {tokens} tokens: the figure would be noise"
    return (last - first) * 1000 / (tokens - 1), (cpu_last - cpu_first) / (tokens - 1)

figures = {(kind, clock): [] for kind in ("free", "first", "warm") for clock in ("wall", "cpu")}
for r in range(rounds):
    s = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": schema(r), "strict": True}}
    row = {"free": ms_per_token(None), "first": ms_per_token(s), "warm": ms_per_token(s)}
    for kind, (wall, cpu) in row.items():
        figures[kind, "wall"].append(wall)
        figures[kind, "cpu"].append(cpu)
    print(f"round {r}: " + "  ".join(f"{k} {w:.1f} wall {c:.1f} cpu" for k, (w, c) in row.items()) + " ms/token",
          flush=True)
for clock in ("wall", "cpu"):
    free = statistics.median(figures["free", clock])
    for kind in ("free", "first", "warm"):
        v = figures[kind, clock]
        m = statistics.median(v)
        print(f"{kind:5s} {clock:4s} median {m:7.2f} ms/token (min {min(v):.2f}, max {max(v):.2f}), "
              f"{100 * (m / free - 1):+.1f}% vs free")
PY
echo "uptime after: $(uptime)" >&2
