#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (corpus/<harness>/) and tiny-tokenizer/ from ../shared/fixtures.

The seeds are committed; rerun this only when the fixtures or the harnesses' input formats change:
    python3 tests/fuzz/make_seeds.py [path/to/shared/fixtures]
Each seed is small (libFuzzer mutates small inputs fastest) and is a file the engine really reads, cut
down: the Qwen2 tokenizer reduced to its 256 byte tokens and first merges, configs as they ship.
"""
import base64
import json
import os
import shutil
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "fixtures")
CORPUS = os.path.join(HERE, "corpus")
MERGES = 64  # of the Qwen2 merges, whichever only need the byte tokens and earlier merges


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(os.path.join(FIXTURES, path), "rb") as f:
        return f.read()


def tiny_tokenizer():
    full = json.loads(read("qwen2-tokenizer/tokenizer.json"))
    by_id = {i: t for t, i in full["model"]["vocab"].items()}
    vocab = {by_id[i]: i for i in range(256)}  # byte-level: ids 0-255 are the bytes
    merges = []
    for merge in full["model"]["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        if left in vocab and right in vocab and left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append(f"{left} {right}")
            if len(merges) == MERGES:
                break
    added = {"<|endoftext|>": len(vocab), "<|im_start|>": len(vocab) + 1, "<|im_end|>": len(vocab) + 2}
    tokenizer = {key: full[key] for key in ("normalizer", "pre_tokenizer", "decoder")}
    tokenizer["added_tokens"] = [{"id": i, "content": c, "special": True} for c, i in added.items()]
    tokenizer["model"] = {"type": "BPE", "vocab": vocab, "merges": merges}
    config = json.loads(read("tiny-fastvlm/tokenizer_config.json"))
    config["added_tokens_decoder"] = {str(i): {"content": c, "special": True} for c, i in added.items()}
    return {
        "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False),
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "added_tokens.json": json.dumps(added),
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False),
    }


def safetensors(tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def png(width, height, colour_type, samples_per_pixel, interlace=0):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + bytes((x * 37 + y * 11) % 256 for x in range(width * samples_per_pixel))
                    for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace)
    body = chunk(b"IHDR", ihdr)
    if colour_type == 3:
        body += chunk(b"PLTE", bytes(range(0, 256, 1)) * 3)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    tiny = tiny_tokenizer()
    for name, text in tiny.items():
        write(os.path.join(HERE, "tiny-tokenizer", name), text)
        # fuzz_tokenizer_files: the first byte picks the file (its index in the harness's list).
        index = ["tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer_config.json"].index(name)
        write(os.path.join(CORPUS, "tokenizer_files", name), bytes([index]) + text.encode())

    for family in ("tiny-fastvlm", "tiny-llama", "tiny-qwen2-text"):
        for name in ("config.json", "generation_config.json"):
            write(os.path.join(CORPUS, "model_config", f"{family}-{name}"), read(f"{family}/{name}"))
    write(os.path.join(CORPUS, "model_config", "preprocessor_config.json"), json.dumps({
        "image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 1024, "width": 1024},
        "size": {"shortest_edge": 1024}, "resample": 3, "do_normalize": False, "image_mean": [0, 0, 0],
        "image_std": [1, 1, 1], "rescale_factor": 0.00392156862745098}))
    write(os.path.join(CORPUS, "model_config", "index.json"), json.dumps(
        {"metadata": {"total_size": 16}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                        "b.weight": "model-00002-of-00002.safetensors"}}))
    fast_vlm = json.loads(read("tiny-fastvlm/config.json"))
    text_keys = {k: fast_vlm.pop(k) for k in list(fast_vlm) if k not in ("vision_config", "architectures")}
    write(os.path.join(CORPUS, "model_config", "fast_vlm-config.json"), json.dumps(
        {"model_type": "fast_vlm", "architectures": ["FastVlmForConditionalGeneration"], "image_token_id": 151646,
         "text_config": dict(text_keys, model_type="qwen2"),
         "vision_config": dict(fast_vlm["vision_config"], architecture="fastvit_mci3")}))

    write(os.path.join(CORPUS, "safetensors", "mixed.safetensors"), safetensors({
        "w.f32": ("F32", [2, 2], struct.pack("<4f", 1, -2, 3.5, 0)),
        "w.bf16": ("BF16", [3], struct.pack("<3H", 0x3F80, 0xC000, 0x4040)),
        "w.f16": ("F16", [1, 2], struct.pack("<2H", 0x3C00, 0xC000)),
        "n.i64": ("I64", [], struct.pack("<q", 7)),
        "q.i8": ("I8", [4], bytes([1, 255, 3, 4])),
    }))
    odd = safetensors({"w": ("BF16", [2], struct.pack("<2H", 0x3F80, 0x4000))})
    length = struct.unpack("<Q", odd[:8])[0] + 1  # an odd-aligned data area
    write(os.path.join(CORPUS, "safetensors", "unaligned.safetensors"),
          struct.pack("<Q", length) + odd[8:8 + length - 1] + b" " + odd[8 + length - 1:])

    image = os.path.join(CORPUS, "image")
    write(os.path.join(image, "photo.jpg"), read("tiny-fastvlm/golden/image_b_97x131.jpg"))
    write(os.path.join(image, "rgb.png"), png(7, 5, 2, 3))
    write(os.path.join(image, "grey_alpha_interlaced.png"), png(9, 4, 4, 2, interlace=1))
    write(os.path.join(image, "palette.png"), png(3, 3, 3, 1))
    # 1x1 WebPs, lossless and lossy (the images browsers' feature tests use).
    write(os.path.join(image, "lossless.webp"), base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="))
    write(os.path.join(image, "lossy.webp"), base64.b64decode("UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA"))

    with open(os.path.join(FIXTURES, "qwen2-tokenizer", "cases.jsonl"), encoding="utf-8") as f:
        cases = [json.loads(line) for line in f if line.strip()][:24]
    for i, case in enumerate(cases):
        # fuzz_tokenizer_encode: first byte even = the rest is the text as bytes.
        write(os.path.join(CORPUS, "tokenizer_encode", f"case{i:02d}"), b"\0" + case["text"].encode())

    pixel = base64.b64encode(png(2, 2, 2, 3)).decode()
    for name, body in {
        "text": {"model": "fastvlm", "messages": [{"role": "user", "content": "Describe the image."}]},
        "image": {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 16,
                  "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["\n\n", "END"],
                  "messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [
                                   {"type": "text", "text": "What is this?"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + pixel}}]}]},
        "turns": {"model": "m", "max_completion_tokens": 8, "messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "And now?"}]}]},
    }.items():
        write(os.path.join(CORPUS, "chat_request", name + ".json"), json.dumps(body))


if __name__ == "__main__":
    main()
