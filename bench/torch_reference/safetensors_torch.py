"""A minimal safetensors reader for the PyTorch peer: the 8-byte little-endian header length, the JSON
header, then raw little-endian tensor bytes. The file is memory-mapped copy-on-write, so tensors are views of
the page cache until a dtype conversion copies them (a 15 GB 7B checkpoint never needs two copies)."""
import json
import mmap
import struct

import torch

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I64": torch.int64,
          "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8}


class SafeTensors:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            # ACCESS_COPY gives a writable buffer (torch.frombuffer warns on read-only ones); pages stay shared
            # with the page cache until written, which never happens.
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        (header_len,) = struct.unpack("<Q", self._map[:8])
        header = json.loads(self._map[8:8 + header_len])
        header.pop("__metadata__", None)
        self._base = 8 + header_len
        self.entries = header

    def keys(self):
        return self.entries.keys()

    def __contains__(self, name):
        return name in self.entries

    def get(self, name):
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"{self.path}: no tensor named {name}")
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{self.path}: tensor {name} has dtype {entry['dtype']}, which this reader does not know")
        begin, end = entry["data_offsets"]
        shape = entry["shape"]
        count = 1
        for d in shape:
            count *= d
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        t = torch.frombuffer(self._map, dtype=dtype, count=count, offset=self._base + begin)
        assert (end - begin) == count * t.element_size(), f"{self.path}: {name} byte size does not match its shape"
        return t.reshape(shape)
