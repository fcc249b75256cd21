"""Captioning across machines: the paths split into partitions, each captioned by a Dask worker.

    from distributed import Client
    import fastvlm.dask
    client = Client("tcp://scheduler:8786")
    for record in fastvlm.dask.caption(paths, "apple/FastVLM-0.5B", client=client, output="captions.jsonl"):
        ...

Each worker process loads the model once, the first time a partition reaches it, and keeps it for every
later partition and call with the same model and engine options. Paths are opened by the workers, so they
must name the same files there (a shared filesystem). A bad image is an error record, as with the CLI;
only a failure of the worker itself (the model cannot be loaded there) fails the call.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import Engine

__all__ = ["caption"]

# The engines of this (worker) process, keyed by model and engine options: a model is loaded once per worker.
_engines: Dict[Tuple[str, Tuple[Tuple[str, Any], ...]], Engine] = {}
_engines_lock = threading.Lock()  # a worker with several threads must not load the same model twice


def _worker_engine(model: str, engine_options: Dict[str, Any]) -> Engine:
    key = (model, tuple(sorted(engine_options.items())))
    with _engines_lock:
        if key not in _engines:
            _engines[key] = Engine(model, **engine_options)
        return _engines[key]


def _caption_partition(paths: List[str], model: str, engine_options: Dict[str, Any],
                       generate_options: Dict[str, Any]) -> List[Dict[str, Any]]:
    engine = _worker_engine(model, engine_options)
    return list(engine.caption(paths, **generate_options))


def caption(paths: Iterable[Union[str, os.PathLike]], model: str, client=None, *, partition_size: int = 16,
            output: Optional[Union[str, os.PathLike]] = None, dtype: str = "auto", threads: int = 0,
            context: int = 4096, image_size: int = 0, prompt: str = "Describe the image.", max_tokens: int = 256,
            temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
            repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int = 0,
            stop: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """Captions `paths` on the cluster of `client` (default: the current one, distributed.get_client()).

    Yields the records of `fastvlm caption` ({path, text, prompt_tokens, tokens, timings} or {path, error}),
    a partition at a time in the order partitions finish. With `output`, each record is also appended to
    that JSONL file and flushed as it arrives. `model` must be loadable on every worker: a hub id, or a
    directory present there. `threads` is per worker (0: one per core of the worker's machine).
    """
    from distributed import as_completed, get_client

    client = client or get_client()
    paths = [os.fspath(p) for p in paths]
    if partition_size < 1:
        raise ValueError(f"partition_size must be >= 1, got {partition_size}")
    partitions = [paths[i:i + partition_size] for i in range(0, len(paths), partition_size)]
    engine_options = {"dtype": dtype, "threads": threads, "context": context, "image_size": image_size}
    generate_options = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top_k": top_k,
                        "top_p": top_p, "min_p": min_p, "repeat_penalty": repeat_penalty,
                        "repeat_last_n": repeat_last_n, "seed": seed, "stop": list(stop or [])}
    # pure=False: two calls over the same paths are two jobs (sampling may differ), never a cached result.
    futures = client.map(_caption_partition, partitions, model=model, engine_options=engine_options,
                         generate_options=generate_options, pure=False)
    pending = set(futures)
    sink = open(output, "a", encoding="utf-8") if output is not None else None
    try:
        for future in as_completed(futures):
            records = future.result()
            pending.discard(future)
            future.release()  # the results leave the cluster's memory as soon as they are here
            for record in records:
                if sink:
                    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                    sink.flush()
                yield record
    finally:
        if sink:
            sink.close()
        if pending:  # the caller stopped early (or a partition failed): drop the partitions not yet run
            client.cancel(list(pending))
