#!/usr/bin/env python3
"""Exports the PyTorch peer's FastViTHD tower (fp32, weights upcast from the checkpoint) to ONNX at one input
size, for the ONNX Runtime peer (bench/peers-node/ort_vision.mjs). Input `pixel_values` [1,3,S,S], output
`image_features` [1,(S/64)^2,C]. Checks the exported graph with onnx.checker when the onnx package is there.

  /usr/bin/python3 bench/torch_reference/export_onnx.py -m /tmp/fastvlm-bench/fastvlm-0.5b --size 1024 \
      -o /tmp/fastvlm-bench/peers/fastvithd-1024.onnx"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastvlm import FastVLM  # noqa: E402


class Tower(torch.nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward(self, pixels):
        return self.tower(pixels)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--size", type=int, required=True, help="input side in pixels (a multiple of 64)")
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args()
    if args.size <= 0 or args.size % 64:
        parser.error(f"--size {args.size} is not a positive multiple of 64 (the tower's total stride)")
    model = FastVLM(args.model, torch.float32, with_llm=False)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    partial = args.out + ".partial"
    with torch.no_grad():
        torch.onnx.export(Tower(model.tower), torch.zeros(1, 3, args.size, args.size), partial,
                          input_names=["pixel_values"], output_names=["image_features"], opset_version=14,
                          do_constant_folding=True)
    try:
        import onnx
        onnx.checker.check_model(partial)
    except ImportError:
        print("onnx is not installed: the exported graph is not checked", file=sys.stderr)
    os.replace(partial, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
