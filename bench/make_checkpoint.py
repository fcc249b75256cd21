#!/usr/bin/env python3
"""Writes a random-weight FastVLM checkpoint in the release layout, for benchmarking (the real weights
cannot be downloaded here). Only the Python standard library is used.

  python3 bench/make_checkpoint.py --preset 0.5b --out /tmp/fastvlm-0.5b-random --tokenizer-from ../shared/fixtures/tiny-fastvlm

Weights are bf16 with random mantissas and magnitudes around 0.01-0.03 (random sign); norm weights,
BatchNorm variances and layer scales are set so activations stay finite. Speed is all it is good for.
"""
import argparse
import json
import os
import shutil
import struct

PRESETS = {
    # Qwen2 dims of the FastVLM releases; the vision tower is stock FastViTHD for all of them.
    "0.5b": dict(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=151936, tie=False),
    "1.5b": dict(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936, tie=False),
    "7b": dict(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, tie=False),
}
VISION = dict(layers=[2, 12, 24, 4, 2], dims=[96, 192, 384, 768, 1536], mlp_ratio=4,
              mixers=["repmixer"] * 3 + ["attention"] * 2, pos_embs=[None, None, None, 7, 7])

# bf16 is the high half of a float32: little-endian byte 1 holds the sign and 7 exponent bits. Mapping
# every such byte to sign | 0x3C gives exponents 120-121, i.e. |w| in [2^-7, 2^-5).
SMALL_HIGH_BYTE = bytes((b & 0x80) | 0x3C for b in range(256))


def random_bf16(count):
    data = bytearray(os.urandom(2 * count))
    data[1::2] = bytes(data[1::2]).translate(SMALL_HIGH_BYTE)
    return bytes(data)


def constant_bf16(count, value):
    bits = struct.unpack("<I", struct.pack("<f", value))[0] >> 16
    return struct.pack("<H", bits) * count


def tensor_list(p):
    """(name, shape, kind) for every tensor, kind in random/one/zero/small/i64."""
    out = []
    v = "model.vision_tower.vision_tower.model."

    def conv(prefix, cout, cin_per_group, k, bias=True):
        out.append((prefix + ".weight", [cout, cin_per_group, k, k], "random"))
        if bias:
            out.append((prefix + ".bias", [cout], "random"))

    def convffn(prefix, c):
        conv(prefix + ".conv.conv", c, 1, 7, bias=False)
        for name, kind in (("weight", "one"), ("bias", "zero"), ("running_mean", "zero"), ("running_var", "one")):
            out.append((f"{prefix}.conv.bn.{name}", [c], kind))
        out.append((prefix + ".conv.bn.num_batches_tracked", [], "i64"))
        conv(prefix + ".fc1", 4 * c, c, 1)
        conv(prefix + ".fc2", c, 4 * c, 1)

    d = VISION["dims"]
    conv(v + "patch_embed.0.reparam_conv", d[0], 3, 3)
    conv(v + "patch_embed.1.reparam_conv", d[0], 1, 3)
    conv(v + "patch_embed.2.reparam_conv", d[0], d[0], 1)
    n = 0
    for stage, blocks in enumerate(VISION["layers"]):
        c = d[stage]
        if VISION["pos_embs"][stage]:
            conv(f"{v}network.{n}.reparam_conv", c, 1, VISION["pos_embs"][stage])
            n += 1
        for b in range(blocks):
            prefix = f"{v}network.{n}.{b}"
            if VISION["mixers"][stage] == "repmixer":
                out.append((prefix + ".layer_scale", [c, 1, 1], "small"))
                conv(prefix + ".token_mixer.reparam_conv", c, 1, 3)
            else:
                out.append((prefix + ".layer_scale_1", [c, 1, 1], "small"))
                out.append((prefix + ".layer_scale_2", [c, 1, 1], "small"))
                out.append((prefix + ".norm.weight", [c], "one"))
                out.append((prefix + ".norm.bias", [c], "zero"))
                out.append((prefix + ".token_mixer.qkv.weight", [3 * c, c], "random"))
                out.append((prefix + ".token_mixer.proj.weight", [c, c], "random"))
                out.append((prefix + ".token_mixer.proj.bias", [c], "random"))
            convffn(prefix + ".convffn", c)
        n += 1
        if stage + 1 < len(VISION["layers"]):
            conv(f"{v}network.{n}.proj.0.lkb_reparam", 2 * c, 1, 7)
            conv(f"{v}network.{n}.proj.1.reparam_conv", 2 * c, 2 * c, 1)
            n += 1
    c = d[-1]
    conv(v + "conv_exp.reparam_conv", 2 * c, 1, 3)
    conv(v + "conv_exp.se.reduce", 2 * c // 16, 2 * c, 1)
    conv(v + "conv_exp.se.expand", 2 * c, 2 * c // 16, 1)
    out.append((v + "head.proj", [2 * c, 768], "random"))

    h, i = p["hidden"], p["intermediate"]
    out.append(("model.mm_projector.0.weight", [h, 2 * c], "random"))
    out.append(("model.mm_projector.0.bias", [h], "random"))
    out.append(("model.mm_projector.2.weight", [h, h], "random"))
    out.append(("model.mm_projector.2.bias", [h], "random"))
    head_dim = h // p["heads"]
    kv = p["kv_heads"] * head_dim
    out.append(("model.embed_tokens.weight", [p["vocab"], h], "random"))
    for layer in range(p["layers"]):
        prefix = f"model.layers.{layer}."
        out.append((prefix + "input_layernorm.weight", [h], "one"))
        out.append((prefix + "post_attention_layernorm.weight", [h], "one"))
        for name, rows, bias in (("q_proj", h, True), ("k_proj", kv, True), ("v_proj", kv, True), ("o_proj", h, False)):
            out.append((f"{prefix}self_attn.{name}.weight", [rows, h], "random"))
            if bias:
                out.append((f"{prefix}self_attn.{name}.bias", [rows], "random"))
        out.append((prefix + "mlp.gate_proj.weight", [i, h], "random"))
        out.append((prefix + "mlp.up_proj.weight", [i, h], "random"))
        out.append((prefix + "mlp.down_proj.weight", [h, i], "random"))
    out.append(("model.norm.weight", [h], "one"))
    if not p["tie"]:
        out.append(("lm_head.weight", [p["vocab"], h], "random"))
    return out


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, shape, kind in tensors:
        count = 1
        for s in shape:
            count *= s
        size = 8 * count if kind == "i64" else 2 * count
        header[name] = {"dtype": "I64" if kind == "i64" else "BF16", "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, kind in tensors:
            count = 1
            for s in shape:
                count *= s
            if kind == "i64":
                f.write(struct.pack("<q", 0) * count)
            elif kind == "random":
                chunk = 1 << 24
                for start in range(0, count, chunk):
                    f.write(random_bf16(min(chunk, count - start)))
            else:
                f.write(constant_bf16(count, {"one": 1.0, "zero": 0.0, "small": 0.1}[kind]))
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="0.5b")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokenizer-from", required=True, help="a model directory whose tokenizer files to copy")
    parser.add_argument("--image-size", type=int, default=1024)
    args = parser.parse_args()
    p = PRESETS[args.preset]
    os.makedirs(args.out, exist_ok=True)
    config = {
        "architectures": ["LlavaQwen2ForCausalLM"], "model_type": "llava_qwen2",
        "hidden_size": p["hidden"], "intermediate_size": p["intermediate"], "num_hidden_layers": p["layers"],
        "num_attention_heads": p["heads"], "num_key_value_heads": p["kv_heads"], "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "vocab_size": p["vocab"], "tie_word_embeddings": p["tie"],
        "max_position_embeddings": 32768, "bos_token_id": 151643, "eos_token_id": 151645,
        "hidden_act": "silu", "mm_hidden_size": 3072, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_tower": f"mobileclip_l_{args.image_size}", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "torch_dtype": "bfloat16",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "added_tokens.json",
                 "special_tokens_map.json", "generation_config.json"):
        src = os.path.join(args.tokenizer_from, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, name))
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensor_list(p))
    print(args.out)


if __name__ == "__main__":
    main()
