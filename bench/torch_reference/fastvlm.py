"""FastVLM for the PyTorch peer: image preprocessing as the official pipeline does it, the FastViTHD tower, the
mlp2x_gelu projector (Linear -> GELU(erf) -> Linear), the image embeddings spliced at the -200 marker of the
prompt ids, and Qwen2 prefill + greedy decoding. Loads a checkpoint directory in the release layout
(config.json + model.safetensors)."""
import json
import os

import torch
import torch.nn.functional as F

from fastvithd import image_size, load_fastvithd
from qwen2 import Qwen2
from safetensors_torch import SafeTensors

IMAGE_MARKER = -200


class FastVLM:
    def __init__(self, model_dir, dtype, with_llm=True):
        config_path = os.path.join(model_dir, "config.json")
        with open(config_path) as f:
            self.config = json.load(f)
        if self.config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
            raise ValueError(f"{config_path}: mm_projector_type {self.config['mm_projector_type']!r} is not mlp2x_gelu")
        self.dtype = dtype
        tensors = SafeTensors(os.path.join(model_dir, "model.safetensors"))
        self.image_size = image_size(self.config)
        self.channels_last = False
        self.tower = load_fastvithd(tensors, self.config, dtype)
        self.projector = [tensors.get(f"model.mm_projector.{i}.{p}").to(dtype) for i in (0, 2) for p in ("weight", "bias")]
        # Without the LLM (vision-only timing, ONNX export) a 7B checkpoint needs no more than its tower.
        self.llm = Qwen2(tensors, self.config, dtype) if with_llm else None

    def preprocess(self, path, size=None):
        """RGB -> pad to a black square of the longer side (image centred) -> Pillow bicubic resize on uint8
        -> [0,1] (mean 0, std 1) -> [1,3,S,S] float32."""
        from PIL import Image  # only needed when reading image files
        size = size or self.image_size
        image = Image.open(path).convert("RGB")
        w, h = image.size
        side = max(w, h)
        square = Image.new("RGB", (side, side), (0, 0, 0))
        square.paste(image, ((side - w) // 2, (side - h) // 2))
        resized = square.resize((size, size), Image.BICUBIC)
        data = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
        return (data.permute(2, 0, 1).double() * (1.0 / 255)).float()[None]

    def image_features(self, pixels, intermediates=None):
        """[1,3,S,S] -> [N, mm_hidden] tower output."""
        pixels = pixels.to(self.dtype)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.tower(pixels, intermediates)[0]

    def use_channels_last(self):
        """Runs the tower in NHWC memory format, oneDNN's preferred layout for convolutions on the CPU."""
        self.tower = self.tower.to(memory_format=torch.channels_last)
        self.channels_last = True

    def project(self, features):
        w0, b0, w2, b2 = self.projector
        return F.linear(F.gelu(F.linear(features, w0, b0)), w2, b2)

    def splice(self, prompt_ids, image_embeds):
        """Text embeddings with the image embeddings in place of the single -200 marker."""
        if prompt_ids.count(IMAGE_MARKER) != 1:
            raise ValueError(f"prompt ids hold {prompt_ids.count(IMAGE_MARKER)} image markers (-200); expected 1")
        at = prompt_ids.index(IMAGE_MARKER)
        parts = []
        if at > 0:
            parts.append(self.llm.embed(prompt_ids[:at]))
        parts.append(image_embeds.to(self.dtype))
        if at + 1 < len(prompt_ids):
            parts.append(self.llm.embed(prompt_ids[at + 1:]))
        return torch.cat(parts)

    def decode(self, first_logits, cache, steps, on_token=None):
        """Greedy decoding: returns `steps` tokens, the first being argmax(first_logits)."""
        tokens = [int(first_logits.argmax())]
        if on_token:
            on_token()
        while len(tokens) < steps:
            logits = self.llm.forward(self.llm.embed([tokens[-1]]), cache)
            tokens.append(int(logits.argmax()))
            if on_token:
                on_token()
        return tokens
