#!/usr/bin/env python3
"""bench/export_gguf.py's block interleave: our quantised layout (src/core/quant.h: codes and half scales in
two arrays) written as ggml Q8_0 / Q4_0 blocks must decode, by ggml's block definitions (block_q8_0: f16 d then
32 int8 q, weight d*q; block_q4_0: f16 d then 16 bytes, byte j = weight j in the low nibble and weight j+16 in
the high nibble, each as q+8), to exactly the weights fastvlm's formula gives (weight = d * code).

Run: python3 tests/export_gguf_test.py (registered in CTest as export_gguf_interleave). Standard library only.
"""
import io
import os
import random
import struct
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import export_gguf  # noqa: E402


def half_bits(value):
    return struct.unpack("<H", struct.pack("<e", value))[0]


def our_layout(kind, codes, scales):
    """(codes bytes, scales bytes) as `fastvlm quantize` stores them: rows of signed codes (multiples of 32),
    one scale per 32; Q4_0 packs a group's weight j and j + 16 into byte j as q + 8 (low, high nibble)."""
    code_bytes = bytearray()
    for row in codes:
        for g in range(0, len(row), 32):
            group = row[g:g + 32]
            if kind == "q8":
                code_bytes += struct.pack("<32b", *group)
            else:
                code_bytes += bytes((group[j] + 8) | ((group[j + 16] + 8) << 4) for j in range(16))
    scale_bytes = b"".join(struct.pack("<H", half_bits(d)) for row in scales for d in row)
    return bytes(code_bytes), scale_bytes


def decode_ggml(kind, data):
    """Floats of a stream of ggml blocks, read as ggml defines them."""
    block = 34 if kind == "q8" else 18
    out = []
    for b in range(0, len(data), block):
        (d,) = struct.unpack_from("<e", data, b)
        qs = data[b + 2:b + block]
        if kind == "q8":
            out += [d * q for q in struct.unpack("<32b", qs)]
        else:
            out += [d * ((byte & 0x0F) - 8) for byte in qs] + [d * ((byte >> 4) - 8) for byte in qs]
    return out


class InterleaveTest(unittest.TestCase):
    def check(self, kind, rows, cols, chunk_bytes):
        rng = random.Random(1234 + rows * cols)
        low, high = (-127, 127) if kind == "q8" else (-8, 7)
        codes = [[rng.randint(low, high) for _ in range(cols)] for _ in range(rows)]
        # Scales that are exact halves (what the checkpoint holds), signs and magnitudes varied.
        scales = [[struct.unpack("<e", struct.pack("<e", rng.uniform(-0.05, 0.05)))[0] for _ in range(cols // 32)]
                  for _ in range(rows)]
        code_bytes, scale_bytes = our_layout(kind, codes, scales)
        out = io.BytesIO()
        export_gguf.write_quantised(out, memoryview(code_bytes), memoryview(scale_bytes), rows,
                                    32 if kind == "q8" else 16, chunk_bytes=chunk_bytes)
        ggml_type = export_gguf.GGML_Q8_0 if kind == "q8" else export_gguf.GGML_Q4_0
        self.assertEqual(len(out.getvalue()), export_gguf.tensor_bytes([cols, rows], ggml_type))
        want = [scales[r][c // 32] * codes[r][c] for r in range(rows) for c in range(cols)]
        self.assertEqual(decode_ggml(kind, out.getvalue()), want)

    def test_q8_0(self):
        self.check("q8", rows=3, cols=96, chunk_bytes=1 << 20)

    def test_q4_0(self):
        self.check("q4", rows=3, cols=96, chunk_bytes=1 << 20)

    def test_rows_streamed_in_chunks(self):
        # A chunk smaller than one row still writes whole rows, one at a time, in order.
        self.check("q8", rows=5, cols=64, chunk_bytes=1)
        self.check("q4", rows=5, cols=64, chunk_bytes=40)

    def test_q4_nibble_order(self):
        # Weight j is byte j's low nibble, weight j + 16 its high nibble: distinct codes pin the order down.
        codes = [[j - 8 for j in range(16)] + [7 - j for j in range(16)]]
        code_bytes, scale_bytes = our_layout("q4", codes, [[1.0]])
        block = export_gguf.interleave(code_bytes, scale_bytes, 16)
        self.assertEqual(block[:2], struct.pack("<e", 1.0))
        self.assertEqual(block[2], (-8 + 8) | ((7 + 8) << 4))  # weights 0 and 16
        self.assertEqual(decode_ggml("q4", bytes(block)), [float(q) for q in codes[0]])


if __name__ == "__main__":
    unittest.main()
