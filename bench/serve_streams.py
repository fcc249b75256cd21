#!/usr/bin/env python3
"""Quick check of continuous batching against a running `fastvlm serve` (Python stdlib only).

Usage:
  fastvlm serve -m /tmp/fastvlm-bench/fastvlm-0.5b-q8 --dtype int8 --parallel 8 --port 8091 &
  python3 bench/serve_streams.py --port 8091 --streams 1,4,8 --tokens 64 [--image /tmp/fastvlm-bench/image-1024.png]

For each stream count N: N concurrent streamed text requests (a ~150-token prompt, each a little different,
at most --tokens new tokens; a random-weight checkpoint rarely ends its turn early), reporting aggregate
completion tokens/s (sum of usage.completion_tokens over the wall time from the first request sent to the
last answer, prefill included), the server's decode-step rate (/metrics fastvlm_decode_tokens_per_second:
tokens of the last 10 s of decode steps over those steps' time) and the longest gap between two content
chunks of any stream.
With --image: while 4 text streams run, one image request is sent; reports the longest gap between two
chunks of the running streams while the image request is admitted (encode + prefill), and its TTFT.
"""
import argparse, json, threading, time, http.client, base64

PROMPT = ("Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. " * 8).strip()


def stream(port, body, record):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    sent = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    record["status"] = resp.status
    times, usage = [], None
    record["times"] = times  # filled live: the image check waits on it
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            if choice.get("delta", {}).get("content"):
                times.append(time.monotonic())
    record.update(sent=sent, times=times, usage=usage, end=time.monotonic())


def request(tokens, i, image=None):
    content = f"{i}: {PROMPT}"
    if image:
        content = [{"type": "text", "text": "Describe the image."}, {"type": "image_url", "image_url": {"url": image}}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}


def run(port, n, tokens):
    records = [dict() for _ in range(n)]
    threads = [threading.Thread(target=stream, args=(port, request(tokens, i), records[i])) for i in range(n)]
    start = time.monotonic()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = max(r["end"] for r in records) - start
    generated = sum(r["usage"]["completion_tokens"] for r in records)
    gaps = [max((b - a for a, b in zip(r["times"], r["times"][1:])), default=0) for r in records]
    return generated / wall, generated, wall, max(gaps)


def decode_rate(port):
    """The server's fastvlm_decode_tokens_per_second: tokens of the last 10 s of decode steps over their time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("fastvlm_decode_tokens_per_second "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8091)
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--image")
    a = ap.parse_args()
    for n in [int(x) for x in a.streams.split(",")]:
        rate, generated, wall, gap = run(a.port, n, a.tokens)
        print(json.dumps({"streams": n, "tokens_per_s": round(rate, 2), "decode_tokens_per_s": decode_rate(a.port),
                          "generated": generated, "wall_s": round(wall, 2), "longest_gap_ms": round(gap * 1000, 1)}),
              flush=True)
    if a.image:
        url = "data:image/png;base64," + base64.b64encode(open(a.image, "rb").read()).decode()
        records = [dict() for _ in range(4)]
        threads = [threading.Thread(target=stream, args=(a.port, request(a.tokens * 4, i), records[i])) for i in range(4)]
        for t in threads: t.start()
        # Until every text stream is decoding (its prompt prefilled), so the gap is the image's doing.
        while not all(len(r.get("times", [])) >= 2 or "end" in r for r in records):
            time.sleep(0.05)
        image_record = {}
        stream(a.port, request(8, 99, url), image_record)
        for t in threads: t.join()
        t0, t1 = image_record["sent"], image_record["times"][0] if image_record["times"] else image_record["end"]
        gap = 0
        for r in records:
            ts = r["times"]
            for x, y in zip(ts, ts[1:]):
                if y >= t0 and x <= t1: gap = max(gap, y - x)
        print(json.dumps({"image_ttft_s": round(t1 - t0, 2), "longest_gap_during_image_admission_ms": round(gap * 1000, 1)}))


if __name__ == "__main__":
    main()
