#!/usr/bin/env python3
"""The bytes a default `fastvlm` load of a dense FastVLM checkpoint holds in use, for comparing its peak RSS
against (issue 16's target: peak RSS <= 1.2x weights in use + KV cache).

usage: bench/weights_in_use.py MODEL_DIR [--context 4096] [--cpu vnni|avx2]

Counts, from the safetensors headers and config.json (no weights are read), the storage the default
precision choice gives each tensor on this CPU kind (--cpu; by default the one /proc/cpuinfo names; "vnni"
assumes AVX512-BF16 as well, as on every VNNI CPU measured so far: Zen 4, Zen 5, Sapphire/Emerald Rapids):
LLM linears Q8_0 (34 bytes per 32 weights, made at load); the vision tower's ConvFFN and attention 1x1 layers
int8 (1 byte a weight + a float scale per output row; on AVX2 without VNNI the codes are held widened to
int16 for VPMADDWD, 2 bytes a weight), the PatchEmbed 1x1 convs bf16 (float32 without bf16 compute, as on
AVX2), the rest of the tower and the projector float32, norms float32. The
bf16 token embedding is used in place in the mapping: only the rows looked up are resident (all of it when
the head is tied, as the head then reads it whole), so it is listed apart. The KV cache is float32,
layers x 2 x kv_heads x head_dim x context.
"""
import argparse
import json
import math
import re
import struct
import sys
from pathlib import Path

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}
LINEAR = re.compile(r"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)|lm_head)\.weight")
TOWER_INT8 = re.compile(r"\.(convffn\.fc[12]|token_mixer\.(qkv|proj))\.weight$")
TOWER_BF16 = re.compile(r"\.proj\.\d+\.reparam_conv\.weight$|patch_embed\.\d+\.reparam_conv\.weight$")


def headers(model: Path):
    files = [model / "model.safetensors"]
    if not files[0].exists():
        index = json.loads((model / "model.safetensors.index.json").read_text())
        files = sorted({model / f for f in index["weight_map"].values()})
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        yield from header.items()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--cpu", choices=["vnni", "avx2"], default=None)
    args = parser.parse_args()
    if args.cpu is None:
        flags = Path("/proc/cpuinfo").read_text().split()
        args.cpu = "vnni" if "avx512_vnni" in flags else "avx2"
    int8_code_bytes = 1 if args.cpu == "vnni" else 2
    companion_bytes = 2 if args.cpu == "vnni" else 4
    config = json.loads((args.model / "config.json").read_text())
    parts = {"llm_q8_0": 0, "llm_other": 0, "embedding_bf16": 0, "vision": 0, "projector": 0}
    for name, info in headers(args.model):
        numel = math.prod(info["shape"])
        if info["dtype"] == "I64":
            continue  # BatchNorm counters: not loaded
        if LINEAR.fullmatch(name):
            parts["llm_q8_0"] += numel * 34 // 32
        elif name == "model.embed_tokens.weight":
            parts["embedding_bf16"] += numel * 2
        elif "vision_tower" in name:
            if ".head." in name:
                continue  # the classifier head: not loaded
            if TOWER_INT8.search(name):
                parts["vision"] += numel * int8_code_bytes + 4 * info["shape"][0]
            elif TOWER_BF16.search(name):
                parts["vision"] += numel * companion_bytes
            else:
                parts["vision"] += numel * 4
        elif "mm_projector" in name:
            parts["projector"] += numel * 4
        else:
            parts["llm_other"] += numel * 4
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    kv = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * args.context * 4
    resident = parts["llm_q8_0"] + parts["llm_other"] + parts["vision"] + parts["projector"]
    if config.get("tie_word_embeddings", False):
        resident += parts["embedding_bf16"]
    print(f"layout for {args.cpu}")
    for key, value in parts.items():
        print(f"{key:16s} {value / 1e6:10.1f} MB")
    print(f"{'kv_cache':16s} {kv / 1e6:10.1f} MB  (context {args.context})")
    print(f"{'in_use+kv':16s} {(resident + kv) / 1e6:10.1f} MB  (embedding counted only when the head is tied)")
    print(f"{'1.2x':16s} {1.2 * (resident + kv) / 1e6:10.1f} MB")


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, KeyError, struct.error) as e:  # a missing, truncated or malformed model
        sys.exit(f"weights_in_use.py: {type(e).__name__}: {e}")
