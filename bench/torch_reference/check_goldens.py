#!/usr/bin/env python3
"""Proves the PyTorch peer is FastVLM: on the tiny-fastvlm fixture (f32 math on the bf16 weights, as the
goldens were made) it must reproduce every golden within 1e-4 of the reference's max |value| (image
features, projector output, inputs_embeds, every intermediate, last-position logits) and the greedy tokens
exactly. Not a ctest: CI has no PyTorch.

  /usr/bin/python3 bench/torch_reference/check_goldens.py [--fixture ../shared/fixtures/tiny-fastvlm] [--channels-last]

Prints one line per comparison and exits non-zero on any miss."""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastvlm import FastVLM  # noqa: E402
from safetensors_torch import SafeTensors  # noqa: E402

RELATIVE_BOUND = 1e-4
failures = []


def compare(name, got, ref, bound=RELATIVE_BOUND):
    got = got.detach().float().reshape(ref.shape)
    ref = ref.float()
    rel = float((got - ref).abs().max() / ref.abs().max())
    ok = rel <= bound
    print(f"{'ok  ' if ok else 'FAIL'} {name:45s} max|diff|/max|ref| {rel:.2e} (bound {bound:.0e})")
    if not ok:
        failures.append(name)


def compare_tokens(name, got, ref, exact_through):
    n = exact_through + 1
    ok = got[:n] == ref[:n]
    print(f"{'ok  ' if ok else 'FAIL'} {name:45s} {sum(a == b for a, b in zip(got, ref))}/{len(ref)} greedy tokens equal"
          f" (the first {n} must be)")
    if not ok:
        failures.append(name)
        print(f"     got {got}\n     ref {ref}")


def main():
    default_fixture = os.path.join(os.environ.get("FASTVLM_SHARED_DIR", "/work/shared"), "fixtures", "tiny-fastvlm")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", default=default_fixture)
    parser.add_argument("--channels-last", action="store_true", help="check the tower in channels-last format too")
    args = parser.parse_args()
    golden_dir = os.path.join(args.fixture, "golden")
    with open(os.path.join(golden_dir, "golden.json")) as f:
        golden = json.load(f)

    torch.set_num_threads(2)
    model = FastVLM(args.fixture, torch.float32)
    if args.channels_last:
        model.use_channels_last()
    prompt_ids = golden["prompt_ids"]
    with torch.no_grad():
        for case, info in golden["images"].items():
            ref = SafeTensors(os.path.join(golden_dir, info["tensors_file"]))
            try:
                from PIL import Image  # noqa: F401
                pixels = model.preprocess(os.path.join(golden_dir, info["file"]))
                # Pixels are only informative: the JPEG decoder may differ; the tower is fed the golden pixels.
                diff = float((pixels - ref.get("pixel_values")).abs().max())
                print(f"info {case + ' pixel_values (own preprocessing)':45s} max|diff| {diff:.2e}")
            except ImportError:
                print("info Pillow is not installed: preprocessing not compared")
            intermediates = {}
            features = model.image_features(ref.get("pixel_values"), intermediates)
            compare(f"{case} image_features", features, ref.get("image_features"))
            embeds = model.project(features)
            compare(f"{case} projector_output", embeds, ref.get("projector_output"))
            inputs = model.splice(prompt_ids, embeds)
            compare(f"{case} inputs_embeds", inputs, ref.get("inputs_embeds"))
            cache = model.llm.new_cache(len(inputs) + len(info["greedy_tokens"]))
            logits = model.llm.forward(inputs, cache, intermediates)
            compare(f"{case} last_logits", logits, ref.get("last_logits"))
            if "intermediates_file" in info:
                inter = SafeTensors(os.path.join(golden_dir, info["intermediates_file"]))
                for name in sorted(inter.keys()):
                    compare(f"{case} {name}", intermediates[name], inter.get(name))
            tokens = model.decode(logits, cache, len(info["greedy_tokens"]))
            compare_tokens(f"{case} greedy tokens", tokens, info["greedy_tokens"], info["tokens_exact_through"])

        text = golden["text_only"]
        ref = SafeTensors(os.path.join(golden_dir, text["tensors_file"]))
        cache = model.llm.new_cache(len(text["ids"]) + len(text["greedy_tokens"]))
        logits = model.llm.forward(model.llm.embed(text["ids"]), cache)
        compare("text_only last_logits", logits, ref.get("last_logits"))
        tokens = model.decode(logits, cache, len(text["greedy_tokens"]))
        compare_tokens("text_only greedy tokens", tokens, text["greedy_tokens"],
                       text.get("tokens_exact_through", len(text["greedy_tokens"]) - 1))

    if failures:
        print(f"{len(failures)} comparison(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print("all goldens reproduced")


if __name__ == "__main__":
    main()
