#!/usr/bin/env python3
"""Prints bench/peers.sh's table from its results (one JSON object a line: row, size, kind, rss_mb, out).

  python3 bench/peers_table.py RESULTS.jsonl

Each cell: median over rounds of each run's median [min - max over every repetition]. Ratios: peer / fastvlm
for the same column (above 1: fastvlm is faster). Where bench_peak ran before and after the rounds (rows
"machine"), each fastvlm row's TTFT is also given against the compute limit of its work (its multiply-
accumulates at the fastest int8 rate bench_peak measured, on every thread) and its decode against the read
bandwidth (issue 16's targets), once for each of the two measurements. Standard library only."""
import json
import statistics
import sys

COLUMNS = [("vision", "vision 1024² ms"), ("vision512", "vision 512² ms"), ("prefill", "prefill ms"),
           ("ttft", "TTFT ms"), ("decode", "decode ms/token"), ("rss", "peak RSS MiB")]
OURS = ["fastvlm default", "fastvlm best (int8, q8)", "fastvlm int8, q4", "fastvlm bf16", "fastvlm f32"]


def samples_of(record):
    """{column: (median, min, max)} of one run."""
    kind, size, out = record["kind"], record["size"], record["out"]
    cells = {}
    if kind == "llama-batched":  # one prompt, then out["tg"] tokens in out["t_tg"] seconds
        cells["decode"] = (out["t_tg"] * 1000 / out["tg"],) * 3
        cells["rss"] = (record["rss_mb"],) * 3
        return cells
    if kind == "llama":
        entry = out[0]
        per = entry["n_gen"] if entry.get("n_gen") else 1
        values = [ns / 1e6 / per for ns in entry["samples_ns"]]
        cells["prefill" if size == "prefill" else "decode"] = (statistics.median(values), min(values), max(values))
        if size == "decode":
            cells["rss"] = (record["rss_mb"],) * 3
        return cells
    t, r = out["timings"], out.get("timings_min_max", {})

    def cell(key):
        return (t[key], *r.get(key, (t[key], t[key])))

    if size == "512":
        cells["vision512"] = cell("vision_ms")
        return cells
    cells["vision"] = cell("vision_ms")
    if kind != "ort":
        cells["prefill"] = cell("prefill_ms")
        cells["ttft"] = cell("ttft_ms")
        cells["decode"] = cell("decode_ms_per_token")
        cells["rss"] = (record["rss_mb"],) * 3
    return cells


def int8_peak(machine):
    """(name, GOP/s per core) of the fastest int8 rate bench_peak measured."""
    rates = {name: rate for name, rate in machine["peak_gops_per_core"].items() if "int8" in name}
    return max(rates.items(), key=lambda item: item[1]) if rates else None


def print_limits(machines, work, table):
    """TTFT / compute limit and decode GB/s / read bandwidth of each fastvlm row, per bench_peak measurement."""
    measured = [(when, m, int8_peak(m), m["read_gbps"].get(str(m["threads"]))) for when, m in machines]
    measured = [x for x in measured if x[2]]
    if not measured or not work:
        return
    print("\nagainst this machine's limits (bench_peak " + " / ".join(when for when, *_ in measured) + " the rounds: " +
          "int8 " + " / ".join(f"{peak[1]:.0f}" for _, _, peak, _ in measured) + f" GOP/s per core ({measured[0][2][0]}), "
          f"read bandwidth on {measured[0][1]['threads']} threads " +
          " / ".join("—" if bw is None else f"{bw:.1f}" for *_, bw in measured) + " GB/s):")
    print("| configuration | multiply-accumulates G | compute limit ms | TTFT / limit | decode GB/s | of read bandwidth |")
    print("|---|---|---|---|---|---|")
    for row, (gflop, weight_bytes) in work.items():
        limits = [gflop / (peak[1] * m["threads"]) * 1000 for _, m, peak, _ in measured]
        ttft = table[row].get("ttft")
        decode = table[row].get("decode")
        gbps = weight_bytes / (decode[0] * 1e6) if decode and weight_bytes else None
        print(f"| {row} | {gflop / 2:.1f} | " + " / ".join(f"{limit:.0f}" for limit in limits) + " | " +
              (" / ".join(f"{ttft[0] / limit:.2f}×" for limit in limits) if ttft else "—") + " | " +
              ("—" if gbps is None else f"{gbps:.1f}") + " | " +
              ("—" if gbps is None else " / ".join("—" if bw is None else f"{gbps / bw:.0%}" for *_, bw in measured)) +
              " |")


def main():
    runs, accuracy, order, machines, work = {}, {}, [], [], {}
    with open(sys.argv[1]) as f:
        for line in f:
            record = json.loads(line)
            row = record["row"]
            if record["kind"] == "machine":
                machines.append((record["size"], record["out"]))
                continue
            out = record["out"]
            if record["kind"] == "fastvlm" and record["size"] == "1024" and "vision_gflops" in out:
                # The work of one image and prompt: rate x time of each part (the same for every repetition).
                t = out["timings"]
                work[row] = (out["vision_gflops"] * t["vision_ms"] / 1000 + out["prefill_gflops"] * t["prefill_ms"] / 1000,
                             out.get("decode_weight_bytes"))
            if record["size"] == "accuracy":
                accuracy[row] = record["out"].get("accuracy")
                continue
            if row not in order:
                order.append(row)
            for column, values in samples_of(record).items():
                runs.setdefault(row, {}).setdefault(column, []).append(values)
    table = {}
    for row, columns in runs.items():
        for column, values in columns.items():
            if column == "rss":
                table.setdefault(row, {})[column] = (max(v[0] for v in values),) * 3
            else:
                table.setdefault(row, {})[column] = (statistics.median(v[0] for v in values),
                                                     min(v[1] for v in values), max(v[2] for v in values))

    def fmt(cell, column):
        if cell is None:
            return "—"
        if column == "rss":
            return f"{cell[0]:.0f}"
        digits = 1 if cell[0] < 100 else 0
        return f"{cell[0]:.{digits}f} [{cell[1]:.{digits}f}–{cell[2]:.{digits}f}]"

    rounds = max((len(v) for c in runs.values() for v in c.values()), default=0)
    print(f"| configuration ({rounds} rounds) | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in order:
        print(f"| {row} | " + " | ".join(fmt(table[row].get(c), c) for c, _ in COLUMNS) + " |")

    if accuracy:
        print("\naccuracy against f32 (fastvlm bench --reference, teacher-forced over the generated tokens):")
        print("| configuration | image embeddings rel. error | logit rel. RMS error (mean / max) | greedy agreement |")
        print("|---|---|---|---|")
        for row, a in accuracy.items():
            if not a:
                print(f"| {row} | — | — | — |")
                continue
            emb = a.get("image_embeds_rel_err")
            print(f"| {row} | {'—' if emb is None else f'{emb:.2e}'} | "
                  f"{a['logit_rel_rms_mean']:.2e} / {a['logit_rel_rms_max']:.2e} | "
                  f"top-1 {a['top1_agreement']:g}/{a['steps']}, greedy prefix {a['greedy_prefix']}/{a['steps']} |")

    peers = [row for row in order if not row.startswith("fastvlm")]
    ours = [row for row in OURS if row in table]
    if peers and ours:
        print("\nratios peer / fastvlm (above 1: fastvlm is faster), medians:")
        print("| peer | vs | " + " | ".join(title for c, title in COLUMNS if c != "rss") + " |")
        print("|---|---" + "|---" * (len(COLUMNS) - 1) + "|")
        for peer in peers:
            for us in ours:
                cells = []
                for c, _ in COLUMNS:
                    if c == "rss":
                        continue
                    a, b = table[peer].get(c), table[us].get(c)
                    cells.append(f"{a[0] / b[0]:.2f}×" if a and b else "—")
                print(f"| {peer} | {us} | " + " | ".join(cells) + " |")

    print_limits(machines, work, table)


if __name__ == "__main__":
    main()
