"""fastvlm.cpp for Python: FastVLM vision-language models (and Qwen2/LLaMA text models) on the CPU.

    import fastvlm
    engine = fastvlm.Engine("apple/FastVLM-0.5B")          # or a local model directory
    print(engine.ask("Describe the image.", image="cat.jpg"))
    for piece in engine.ask("And the colours?", image=pil_image, stream=True):
        print(piece, end="", flush=True)
    chat = engine.chat()                                     # keeps its KV cache across turns
    chat.ask("What is in the picture?", image="cat.jpg"); chat.ask("Is it outdoors?")
    for record in engine.caption(["a.jpg", "b.png"]):        # the records `fastvlm caption` writes
        print(record)

Every engine failure (a missing file, a corrupt image, a prompt longer than the context) raises
fastvlm.Error with the engine's message. Generation and encoding release the GIL.
"""
from __future__ import annotations

import io
import os
import queue
import threading
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

# OpenMP threads that spin only briefly at a barrier, then sleep, as the CLI sets them (tools/main.cpp has
# the measurements): a long-spinning thread that lost its core to another process turns every barrier into
# a scheduler tick. OpenMP reads this when _fastvlm loads it, so it is set first; a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from . import _fastvlm  # noqa: E402
from ._fastvlm import Error  # noqa: E402

__all__ = ["Engine", "Chat", "Error", "ImageLike"]

# A path, encoded bytes (JPEG, PNG, WebP), a PIL image or an HWC uint8 numpy array (RGB, RGBA or grey).
ImageLike = Any


def _engine_image(image: ImageLike) -> Union[None, str, bytes]:
    """What the C++ engine takes: None, a path or encoded bytes.

    The public C++ API accepts images only as files or encoded bytes, so in-memory pixels (PIL, numpy)
    are encoded as PNG, losslessly, with no compression to keep it cheap.
    """
    if image is None or isinstance(image, (str, bytes)):
        return image
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    from PIL import Image  # imported here so that paths and bytes work without Pillow

    if not isinstance(image, Image.Image):
        import numpy as np

        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise Error(f"an image array must be HxW or HxWxC (C = 1, 3 or 4) uint8, got {array.dtype} {array.shape}")
        image = Image.fromarray(np.ascontiguousarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _generate_args(max_tokens: int, temperature: float, top_k: int, top_p: float, min_p: float,
                   repeat_penalty: float, repeat_last_n: int, seed: int, stop: Optional[Sequence[str]]) -> tuple:
    return (max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, list(stop or []))


def _stream(run) -> Iterator[str]:
    """Runs `run(on_text)` on a thread of its own and yields the pieces it produces.

    The engine calls back with each piece; the caller's loop consumes them as they come. Leaving the loop
    early (break, close, garbage collection) cancels the generation.
    """
    pieces: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
    cancelled = threading.Event()

    def on_text(piece: str) -> bool:
        pieces.put(("piece", piece))
        return not cancelled.is_set()

    def worker() -> None:
        try:
            run(on_text)
            pieces.put(("done", None))
        except BaseException as error:  # handed to the consuming thread, which raises it
            pieces.put(("error", error))

    thread = threading.Thread(target=worker, name="fastvlm-generate", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = pieces.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        cancelled.set()
        thread.join()


class Chat:
    """A conversation with its own KV cache: each turn prefills only what the cache does not hold yet."""

    def __init__(self, engine: "Engine", system_prompt: Optional[str] = None) -> None:
        self._session = _fastvlm.Session(engine._engine)
        if system_prompt is not None:
            self._session.set_system_prompt(system_prompt)
        self.last: Optional[Dict[str, Any]] = None
        """The last turn's details: text, prompt_tokens (positions prefilled), tokens, token_ids, stop_reason, timings."""

    def ask(self, prompt: str, image: ImageLike = None, max_tokens: int = 256, temperature: float = 0.0,
            top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
            repeat_last_n: int = 64, seed: int = 0, stop: Optional[Sequence[str]] = None,
            stream: bool = False) -> Union[str, Iterator[str]]:
        """The model's answer to one user turn (optionally about an image), the conversation kept.

        Greedy by default (temperature 0). With stream=True, returns an iterator over the answer's pieces
        as they are generated; the turn's details are in `last` once it is exhausted.
        """
        args = (prompt, _engine_image(image)) + _generate_args(max_tokens, temperature, top_k, top_p, min_p,
                                                                repeat_penalty, repeat_last_n, seed, stop)
        if not stream:
            self.last = self._session.ask(*args, None)
            return self.last["text"]

        def run(on_text) -> None:
            self.last = self._session.ask(*args, on_text)

        return _stream(run)

    def reset(self) -> None:
        """Forgets the conversation (and empties the KV cache)."""
        self._session.reset()
        self.last = None

    @property
    def context_used(self) -> int:
        """KV cache positions the conversation holds."""
        return self._session.context_used


class Engine:
    """A model loaded once; any number of Chats (and threads) may use it.

    model: a local model directory (Hugging Face layout) or a hub id "owner/name[@revision]", downloaded
    into the Hugging Face cache on first use. dtype: "auto" (the fastest path within the README's accuracy bounds), "f32" (reference-exact), "bf16" or "int8".
    threads: 0 for one per core. context: KV cache positions of each Chat. image_size: 0 for the
    model's own input size.
    """

    def __init__(self, model: Union[str, os.PathLike], dtype: str = "auto", threads: int = 0, context: int = 4096,
                 image_size: int = 0, max_image_pixels: int = 64 << 20, chat_format: str = "",
                 quiet: bool = True) -> None:
        self._engine = _fastvlm.Engine(os.fspath(model), dtype, threads, context, image_size, max_image_pixels,
                                       chat_format, quiet)

    @property
    def info(self) -> Dict[str, Any]:
        """The model: path, family, hidden_size, image_size, image_tokens, vision_channels, ..."""
        return self._engine.info

    def chat(self, system_prompt: Optional[str] = None) -> Chat:
        """A new conversation (see Chat)."""
        return Chat(self, system_prompt)

    def ask(self, prompt: str, image: ImageLike = None, max_tokens: int = 256, temperature: float = 0.0,
            top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
            repeat_last_n: int = 64, seed: int = 0, stop: Optional[Sequence[str]] = None,
            stream: bool = False) -> Union[str, Iterator[str]]:
        """One question in a fresh conversation: the answer's text, or with stream=True an iterator of pieces."""
        return Chat(self).ask(prompt, image, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
                              repeat_last_n, seed, stop, stream)

    def embed_image(self, image: ImageLike, features: bool = False):
        """The image's embeddings as the LLM sees them: float32 [image_tokens, hidden_size].

        With features=True, a pair (embeddings, tower output [image_tokens, vision_channels]).
        """
        return self._engine.embed_image(_engine_image(image), features)

    def caption(self, paths: Iterable[Union[str, os.PathLike]], prompt: str = "Describe the image.",
                max_tokens: int = 256, temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95,
                min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int = 0,
                stop: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
        """One record per image, lazily, as `fastvlm caption` writes them: {path, text, prompt_tokens,
        tokens, timings}, or {path, error} for an image the engine could not take (the run goes on)."""
        session = _fastvlm.Session(self._engine)
        args = _generate_args(max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, stop)
        for path in paths:
            path = os.fspath(path)
            session.reset()  # every image is a conversation of its own
            try:
                result = session.ask(prompt, path, *args, None)
            except Error as error:
                yield {"path": path, "error": str(error)}
                continue
            yield {"path": path, "text": result["text"], "prompt_tokens": result["prompt_tokens"],
                   "tokens": result["tokens"], "timings": result["timings"]}
