#!/usr/bin/env python3
"""Writes the Qwen2 language model of a checkpoint as a GGUF v3 file, so that llama.cpp can run the same
weights as fastvlm side by side (bench/llama_peer.sh, bench/serve_bench.py).

Usage:
    python3 bench/export_gguf.py MODEL_DIR OUT.gguf [--outtype bf16|f32]

MODEL_DIR is a Hugging Face-style directory with config.json, model.safetensors (one file), vocab.json,
merges.txt and optionally added_tokens.json / tokenizer_config.json: a text-only Qwen2 checkpoint (model_type
qwen2) or FastVLM's llava_qwen2, whose vision tower and projector are left out. Its tensors are bf16/f16/f32,
or it is a checkpoint quantised by `fastvlm quantize --type q8|q4` (config.json "quantization"): then each
quantised linear (codes NAME.weight + scales NAME.weight_scale, layout in src/core/quant.h) becomes a ggml
Q8_0 / Q4_0 tensor holding exactly the same codes and scales, and general.file_type says Q8_0 / Q4_0, so
llama.cpp runs the very weights fastvlm runs and no bf16 GGUF or llama-quantize is needed. --outtype applies
to the unquantised matrices (the token embedding; everything in an unquantised checkpoint): bf16 (default)
copies the bf16 bytes unchanged; f32 widens them exactly (what the faithfulness check uses, so llama.cpp
computes in float32 as our reference does). One-dimensional tensors (norms, biases) are always float32, as
llama.cpp expects. Python standard library only; memory use stays small (a 7B checkpoint is streamed).

The GGUF layout follows the published GGUF specification (facts only, no code from llama.cpp): little-endian
header "GGUF", version 3, tensor and key-value counts, the key-values, the tensor infos (dimensions innermost
first, so a row-major PyTorch [out, in] matrix is [in, out] with the same bytes), then the tensor data, each
tensor at a multiple of general.alignment (32). Qwen2 needs no Q/K permutation (llama.cpp applies NEOX-style
rope to it, as Hugging Face does).

Our quantised layout is ggml's once interleaved: ggml's block_q8_0 is an f16 scale d followed by 32 int8 codes
(34 bytes, weight = d * q), and block_q4_0 an f16 d followed by 16 bytes whose byte j holds weight j in the low
nibble and weight j + 16 in the high nibble, each as q + 8 (18 bytes, weight = d * (nibble - 8)); a row is its
blocks in order. Ours keeps the same codes (byte for byte, nibble order included) and the same half scales in
two separate arrays, so block g of row r is scales[r, g] followed by codes[r, 32g:32g+32] (Q8_0) or
codes[r, 16g:16g+16] (Q4_0); interleave() does that, with strided slice copies rather than a loop per block.
"""
import argparse
import json
import mmap
import os
import struct
import sys

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# GGUF metadata value types.
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types and llama.cpp file types used here.
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 8, 30
FILE_TYPE = {"f32": 0, "bf16": 32}  # LLAMA_FTYPE_ALL_F32, LLAMA_FTYPE_MOSTLY_BF16
# A quantised checkpoint's config.json "quantization" type -> (ggml tensor type, llama.cpp file type
# LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_0, safetensors dtype of its codes).
QUANT_TYPES = {"q8_0": (GGML_Q8_0, 7, "I8"), "q4_0": (GGML_Q4_0, 2, "U8")}
QUANT_BLOCK = 32                             # weights per block (kQuantGroupSize, ggml's QK8_0 / QK4_0)
CODE_BYTES = {GGML_Q8_0: 32, GGML_Q4_0: 16}  # code bytes per block
SCALE_BYTES = 2                              # one IEEE half per block
# llama.cpp token types.
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5

# FastVLM's conversation template (LLaVA's conv_qwen_2) is ChatML with one leading system turn defaulting to
# "You are a helpful assistant.", i.e. Qwen2-Instruct's template; FastVLM checkpoints ship no chat_template,
# so llama-server gets this one and renders the same prompt tokens as `fastvlm serve`.
QWEN2_CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Hugging Face name (after "model.layers.N.") -> GGUF name (after "blk.N.").
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
SKIPPED_PREFIXES = ("model.vision_tower.", "model.mm_projector.")
SUPPORTED_MODEL_TYPES = ("qwen2", "llava_qwen2")


class ExportError(Exception):
    pass


def load_json(path, required=True):
    if not os.path.exists(path):
        if required:
            raise ExportError(f"{path}: missing")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})")


# ---- reading safetensors -----------------------------------------------------------------------------------

class SafeTensors:
    """The tensors of one .safetensors file, memory-mapped: name -> (dtype, shape, bytes view)."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "rb")
        self.map = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self.map) < 8:
            raise ExportError(f"{path}: too short for a safetensors header")
        (header_len,) = struct.unpack_from("<Q", self.map, 0)
        if 8 + header_len > len(self.map):
            raise ExportError(f"{path}: header length {header_len} runs past the end of the file")
        header = json.loads(bytes(self.map[8:8 + header_len]))
        self.data_start = 8 + header_len
        self.tensors = {k: v for k, v in header.items() if k != "__metadata__"}

    def view(self, name):
        info = self.tensors[name]
        begin, end = info["data_offsets"]
        return memoryview(self.map)[self.data_start + begin:self.data_start + end]

    def release(self, name):
        """Drops the mapped pages of a tensor once written, so that resident memory stays at one tensor's worth
        instead of growing to the whole checkpoint (the pages are clean: the file is only read)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin, end = self.tensors[name]["data_offsets"]
        first = (self.data_start + begin) // mmap.PAGESIZE * mmap.PAGESIZE
        self.map.madvise(mmap.MADV_DONTNEED, first, self.data_start + end - first)


def element_count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def convert(data, src_dtype, dst_type, name):
    """Bytes of a tensor in ggml type dst_type from safetensors dtype src_dtype, exactly (no rounding)."""
    if src_dtype == "F32" and dst_type == GGML_F32:
        return data
    if src_dtype == "BF16" and dst_type == GGML_BF16:
        return data
    if src_dtype == "F16" and dst_type == GGML_F16:
        return data
    if src_dtype == "BF16" and dst_type == GGML_F32:
        # A bf16 value is the top half of the float32 with the same bits: put it there, zero the low half.
        out = bytearray(len(data) * 2)
        out[2::4] = data[0::2]
        out[3::4] = data[1::2]
        return out
    if src_dtype == "F16" and dst_type == GGML_F32:
        count = len(data) // 2
        return struct.pack(f"<{count}f", *struct.unpack(f"<{count}e", data))
    raise ExportError(f"tensor {name}: dtype {src_dtype} cannot be written as ggml type {dst_type}")


def interleave(codes, scales, code_bytes):
    """ggml Q8_0 / Q4_0 blocks from our separate arrays: `scales` holds n halves (2n bytes) and `codes` n groups
    of code_bytes bytes, group i belonging to scale i; block i is scale i's two bytes, then group i."""
    block = SCALE_BYTES + code_bytes
    count = len(scales) // SCALE_BYTES
    if len(codes) != count * code_bytes:
        raise AssertionError(f"{len(codes)} code bytes for {count} scales")
    out = bytearray(count * block)
    for k in range(SCALE_BYTES):
        out[k::block] = scales[k::SCALE_BYTES]
    for k in range(code_bytes):
        out[SCALE_BYTES + k::block] = codes[k::code_bytes]
    return out


def write_quantised(f, codes, scales, rows, code_bytes, chunk_bytes=1 << 23):
    """Writes a quantised matrix as ggml blocks, a few rows at a time (a 7B checkpoint never sits in memory)."""
    row_codes, row_scales = len(codes) // rows, len(scales) // rows
    step = max(1, chunk_bytes // row_codes)
    for first in range(0, rows, step):
        last = min(rows, first + step)
        f.write(interleave(bytes(codes[first * row_codes:last * row_codes]),
                           bytes(scales[first * row_scales:last * row_scales]), code_bytes))


# ---- the model's tensors -----------------------------------------------------------------------------------

def plan_tensors(st, config, outtype, quant):
    """[(gguf name, hf name, gguf dims, ggml type)] in llama.cpp's usual order. quant: the QUANT_TYPES entry of a
    quantised checkpoint, or None; a quantised tensor's hf name is its codes', its scales are hf name + "_scale"."""
    n_layers = config["num_hidden_layers"]
    names = {}
    for hf_name in st.tensors:
        if hf_name.startswith(SKIPPED_PREFIXES):
            continue
        if quant and hf_name.endswith(".weight_scale") and hf_name[:-len("_scale")] in st.tensors:
            continue  # written inside its codes' blocks
        if hf_name in GLOBAL_TENSORS:
            names[hf_name] = GLOBAL_TENSORS[hf_name]
            continue
        parts = hf_name.split(".", 3)
        if len(parts) == 4 and parts[0] == "model" and parts[1] == "layers" and parts[3] in LAYER_TENSORS:
            layer = int(parts[2])
            if layer >= n_layers:
                raise ExportError(f"{st.path}: tensor {hf_name} is past num_hidden_layers {n_layers}")
            names[hf_name] = f"blk.{layer}.{LAYER_TENSORS[parts[3]]}"
            continue
        if hf_name.startswith("model.layers.") and hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from rope_theta
        hint = " (quantised scales, but config.json has no \"quantization\")" if hf_name.endswith("_scale") else ""
        raise ExportError(f"{st.path}: tensor {hf_name} has no place in a Qwen2 GGUF{hint}")

    expected = ["model.embed_tokens.weight", "model.norm.weight"]
    expected += [f"model.layers.{i}.{t}" for i in range(n_layers) for t in LAYER_TENSORS]
    missing = [n for n in expected if n not in names]
    if missing:
        raise ExportError(f"{st.path}: missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if "lm_head.weight" not in names and not config.get("tie_word_embeddings", False):
        raise ExportError(f"{st.path}: no lm_head.weight and config.json has tie_word_embeddings false")

    def order(hf_name):
        gguf_name = names[hf_name]
        if gguf_name.startswith("blk."):
            layer = int(gguf_name.split(".")[1])
            return (1, layer, list(LAYER_TENSORS.values()).index(gguf_name.split(".", 2)[2]))
        return ({"token_embd.weight": 0, "output_norm.weight": 2, "output.weight": 3}[gguf_name], 0, 0)

    plan = []
    for hf_name in sorted(names, key=order):
        info = st.tensors[hf_name]
        shape = info["shape"]
        if quant and info["dtype"] == quant[2] and len(shape) == 2:
            ggml_type = quant[0]
            code_bytes = CODE_BYTES[ggml_type]
            rows, cols = shape[0], shape[1] // code_bytes * QUANT_BLOCK
            if shape[1] % code_bytes:
                raise ExportError(f"{st.path}: tensor {hf_name}: {shape[1]} code bytes per row is not whole blocks")
            scale = st.tensors.get(hf_name + "_scale")
            if scale is None or scale["dtype"] != "F16" or scale["shape"] != [rows, cols // QUANT_BLOCK]:
                got = "missing" if scale is None else f"{scale['dtype']} {scale['shape']}"
                raise ExportError(f"{st.path}: tensor {hf_name}_scale: expected F16 {[rows, cols // QUANT_BLOCK]}, "
                                  f"got {got}")
            plan.append((names[hf_name], hf_name, [cols, rows], ggml_type))
            continue
        if info["dtype"] not in ("BF16", "F16", "F32"):
            raise ExportError(f"{st.path}: tensor {hf_name} has dtype {info['dtype']}, expected BF16, F16 or F32"
                              + (f" or {quant[2]} codes" if quant else " (config.json has no \"quantization\")"))
        if len(shape) == 1:
            ggml_type = GGML_F32
        elif outtype == "f32":
            ggml_type = GGML_F32
        else:
            ggml_type = {"BF16": GGML_BF16, "F16": GGML_F16, "F32": GGML_F32}[info["dtype"]]
        plan.append((names[hf_name], hf_name, list(reversed(shape)), ggml_type))
    return plan


def check_shapes(plan, config):
    hidden = config["hidden_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = hidden // heads
    ffn, vocab = config["intermediate_size"], config["vocab_size"]
    want = {
        "token_embd.weight": [hidden, vocab], "output.weight": [hidden, vocab], "output_norm.weight": [hidden],
        "attn_norm.weight": [hidden], "ffn_norm.weight": [hidden],
        "attn_q.weight": [hidden, hidden], "attn_q.bias": [hidden],
        "attn_k.weight": [hidden, kv_heads * head_dim], "attn_k.bias": [kv_heads * head_dim],
        "attn_v.weight": [hidden, kv_heads * head_dim], "attn_v.bias": [kv_heads * head_dim],
        "attn_output.weight": [hidden, hidden],
        "ffn_gate.weight": [hidden, ffn], "ffn_up.weight": [hidden, ffn], "ffn_down.weight": [ffn, hidden],
    }
    for gguf_name, hf_name, dims, _ in plan:
        key = gguf_name.split(".", 2)[2] if gguf_name.startswith("blk.") else gguf_name
        if dims != want[key]:
            raise ExportError(f"tensor {hf_name}: shape {list(reversed(dims))} does not match config.json "
                              f"(expected {list(reversed(want[key]))})")


# ---- the tokenizer -----------------------------------------------------------------------------------------

def load_vocab(model_dir, config):
    """(tokens, token types, merges, special ids) as llama.cpp's BPE ("gpt2") tokenizer reads them."""
    vocab = load_json(os.path.join(model_dir, "vocab.json"))
    added = load_json(os.path.join(model_dir, "added_tokens.json"), required=False) or {}
    tok_config = load_json(os.path.join(model_dir, "tokenizer_config.json"), required=False) or {}
    decoder = tok_config.get("added_tokens_decoder", {})
    for id_text, entry in decoder.items():  # added tokens listed only in tokenizer_config.json
        added.setdefault(entry["content"], int(id_text))

    special = {entry["content"] for entry in decoder.values() if entry.get("special")}
    special |= set(tok_config.get("additional_special_tokens", []))
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = tok_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            special.add(value)

    by_id = {}
    for text, token_id in list(vocab.items()) + list(added.items()):
        if token_id in by_id and by_id[token_id] != text:
            raise ExportError(f"{model_dir}: token id {token_id} is both {by_id[token_id]!r} and {text!r}")
        by_id[token_id] = text
    vocab_size = max(config["vocab_size"], max(by_id) + 1)

    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            # The embedding rows past the tokenizer's ids: placeholders, as every Qwen2 GGUF has them.
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_UNUSED)
            continue
        text = by_id[i]
        tokens.append(text)
        if text in added:
            types.append(TOKEN_CONTROL if text in special else TOKEN_USER_DEFINED)
        else:
            types.append(TOKEN_NORMAL)

    merges_path = os.path.join(model_dir, "merges.txt")
    if not os.path.exists(merges_path):
        raise ExportError(f"{merges_path}: missing")
    with open(merges_path, encoding="utf-8") as f:
        merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")]

    token_ids = {text: i for i, text in by_id.items()}

    def id_of(key):
        value = tok_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return token_ids.get(value) if value else None

    eos = id_of("eos_token")
    if eos is None:
        eos = config.get("eos_token_id")
    ids = {"bos": config.get("bos_token_id"), "eos": eos, "padding": id_of("pad_token")}
    template = tok_config.get("chat_template") or QWEN2_CHATML_TEMPLATE
    add_bos = bool(tok_config.get("add_bos_token", False))
    return tokens, types, merges, ids, template, add_bos


# ---- writing GGUF ------------------------------------------------------------------------------------------

def gguf_string(text):
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def gguf_kv(key, value_type, value):
    out = gguf_string(key) + struct.pack("<I", value_type)
    if value_type == T_STRING:
        return out + gguf_string(value)
    if value_type == T_UINT32:
        return out + struct.pack("<I", value)
    if value_type == T_FLOAT32:
        return out + struct.pack("<f", value)
    if value_type == T_BOOL:
        return out + struct.pack("<B", 1 if value else 0)
    if value_type == T_ARRAY:
        item_type, items = value
        out += struct.pack("<IQ", item_type, len(items))
        if item_type == T_STRING:
            return out + b"".join(gguf_string(item) for item in items)
        if item_type == T_INT32:
            return out + struct.pack(f"<{len(items)}i", *items)
    raise AssertionError(f"unhandled GGUF value type {value_type}")


def metadata(config, model_dir, file_type, vocab):
    tokens, types, merges, ids, template, add_bos = vocab
    kvs = [
        ("general.architecture", T_STRING, "qwen2"),
        ("general.name", T_STRING, os.path.basename(os.path.normpath(model_dir))),
        ("general.file_type", T_UINT32, file_type),
        ("general.alignment", T_UINT32, ALIGNMENT),
        ("qwen2.context_length", T_UINT32, config.get("max_position_embeddings", 32768)),
        ("qwen2.embedding_length", T_UINT32, config["hidden_size"]),
        ("qwen2.block_count", T_UINT32, config["num_hidden_layers"]),
        ("qwen2.feed_forward_length", T_UINT32, config["intermediate_size"]),
        ("qwen2.attention.head_count", T_UINT32, config["num_attention_heads"]),
        ("qwen2.attention.head_count_kv", T_UINT32, config.get("num_key_value_heads", config["num_attention_heads"])),
        ("qwen2.rope.freq_base", T_FLOAT32, float(config.get("rope_theta", 1000000.0))),
        ("qwen2.attention.layer_norm_rms_epsilon", T_FLOAT32, float(config.get("rms_norm_eps", 1e-6))),
        ("tokenizer.ggml.model", T_STRING, "gpt2"),
        ("tokenizer.ggml.pre", T_STRING, "qwen2"),
        ("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
        ("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, types)),
        ("tokenizer.ggml.merges", T_ARRAY, (T_STRING, merges)),
    ]
    for name, token_id in ids.items():
        if token_id is not None:
            kvs.append((f"tokenizer.ggml.{name}_token_id", T_UINT32, token_id))
    kvs.append(("tokenizer.ggml.add_bos_token", T_BOOL, add_bos))
    kvs.append(("tokenizer.chat_template", T_STRING, template))
    return kvs


def pad_to(offset):
    return (ALIGNMENT - offset % ALIGNMENT) % ALIGNMENT


def tensor_bytes(dims, ggml_type):
    if ggml_type in CODE_BYTES:
        return element_count(dims) // QUANT_BLOCK * (SCALE_BYTES + CODE_BYTES[ggml_type])
    return element_count(dims) * {GGML_F32: 4, GGML_F16: 2, GGML_BF16: 2}[ggml_type]


def write_gguf(out_path, kvs, plan, st):
    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(plan), len(kvs))
    header += b"".join(gguf_kv(*kv) for kv in kvs)
    offset = 0
    for gguf_name, _, dims, ggml_type in plan:
        header += gguf_string(gguf_name) + struct.pack("<I", len(dims))
        header += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)
        offset += tensor_bytes(dims, ggml_type)
        offset += pad_to(offset)
    header += b"\0" * pad_to(len(header))

    tmp_path = out_path + ".tmp"  # renamed into place only when whole: nothing half-written
    try:
        with open(tmp_path, "wb") as f:
            f.write(header)
            for gguf_name, hf_name, dims, ggml_type in plan:
                if ggml_type in CODE_BYTES:
                    write_quantised(f, st.view(hf_name), st.view(hf_name + "_scale"), dims[1], CODE_BYTES[ggml_type])
                    st.release(hf_name + "_scale")
                else:
                    f.write(convert(st.view(hf_name), st.tensors[hf_name]["dtype"], ggml_type, hf_name))
                st.release(hf_name)
                f.write(b"\0" * pad_to(tensor_bytes(dims, ggml_type)))
        os.replace(tmp_path, out_path)
    except BaseException:
        # A full disk or an interrupt must not leave gigabytes of partial file behind.
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("out")
    parser.add_argument("--outtype", choices=sorted(FILE_TYPE), default="bf16")
    args = parser.parse_args()
    try:
        config = load_json(os.path.join(args.model_dir, "config.json"))
        if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
            raise ExportError(f"{args.model_dir}/config.json: model_type {config.get('model_type')!r} is not "
                              f"one of {', '.join(SUPPORTED_MODEL_TYPES)}")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
            if not isinstance(config.get(key), int) or config[key] <= 0:
                raise ExportError(f"{args.model_dir}/config.json: {key} missing or not a positive integer")
        st_path = os.path.join(args.model_dir, "model.safetensors")
        if not os.path.exists(st_path):
            raise ExportError(f"{st_path}: missing (sharded checkpoints are not supported)")
        quant = None
        if "quantization" in config:
            q = config["quantization"]
            if not isinstance(q, dict) or q.get("type") not in QUANT_TYPES or q.get("group_size") != QUANT_BLOCK:
                raise ExportError(f"{args.model_dir}/config.json: quantization {q!r} is not "
                                  f"{{\"type\": q8_0|q4_0, \"group_size\": {QUANT_BLOCK}}}")
            quant = QUANT_TYPES[q["type"]]
        st = SafeTensors(st_path)
        plan = plan_tensors(st, config, args.outtype, quant)
        check_shapes(plan, config)
        file_type = quant[1] if quant else FILE_TYPE[args.outtype]
        kvs = metadata(config, args.model_dir, file_type, load_vocab(args.model_dir, config))
        write_gguf(args.out, kvs, plan, st)
    except (ExportError, OSError, ValueError, KeyError) as e:
        print(f"export_gguf: {e}", file=sys.stderr)
        return 1
    size = os.path.getsize(args.out)
    kind = f"{config['quantization']['type'].upper()}, other matrices {args.outtype}" if quant else args.outtype
    print(f"wrote {args.out}: {len(plan)} tensors, {size / 2**20:.1f} MiB ({kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
