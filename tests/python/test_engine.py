# The `fastvlm` package against the CLI: the same greedy answers whatever form the image takes, streaming,
# chats that reuse their KV cache, image embeddings, errors as fastvlm.Error, and the GIL released.
import threading
import time

import numpy as np
import pytest
from PIL import Image

import fastvlm
from conftest import IMAGE_A, IMAGE_B, MAX_TOKENS, MODEL

PROMPT = "Describe the image."


@pytest.mark.parametrize("form", ["path", "pathlike", "bytes", "pil", "numpy", "numpy_rgba", "numpy_view"])
def test_ask_gives_the_cli_answer_for_every_image_form(engine, cli_answer, form):
    image = {
        "path": lambda: str(IMAGE_A),
        "pathlike": lambda: IMAGE_A,
        "bytes": lambda: IMAGE_A.read_bytes(),
        "pil": lambda: Image.open(IMAGE_A),
        "numpy": lambda: np.asarray(Image.open(IMAGE_A).convert("RGB")),
        # the engine drops alpha (never composites it), as Pillow's convert("RGB") does
        "numpy_rgba": lambda: np.asarray(Image.open(IMAGE_A).convert("RGBA")),
        "numpy_view": lambda: np.asarray(Image.open(IMAGE_A).convert("RGBA"))[:, :, :3],  # not contiguous
    }[form]()
    assert engine.ask(PROMPT, image=image, max_tokens=MAX_TOKENS) == cli_answer(IMAGE_A)


def test_jpeg_bytes_and_pil_decode_like_the_engine(engine, cli_answer):
    assert engine.ask(PROMPT, image=IMAGE_B.read_bytes(), max_tokens=MAX_TOKENS) == cli_answer(IMAGE_B)
    assert engine.ask(PROMPT, image=Image.open(IMAGE_B), max_tokens=MAX_TOKENS) == cli_answer(IMAGE_B)


def test_streaming_concatenates_to_the_same_text(engine, cli_answer):
    chat = engine.chat()
    pieces = list(chat.ask(PROMPT, image=IMAGE_A, max_tokens=MAX_TOKENS, stream=True))
    assert len(pieces) > 1
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == cli_answer(IMAGE_A)
    assert chat.last["text"] == cli_answer(IMAGE_A)


def test_leaving_a_stream_early_cancels_it(engine):
    chat = engine.chat()
    stream = chat.ask(PROMPT, image=IMAGE_A, max_tokens=MAX_TOKENS, stream=True)
    first = next(stream)
    stream.close()
    assert chat.last["stop_reason"] == "cancelled"
    assert chat.last["text"].startswith(first)


def test_an_exception_in_the_consumer_does_not_hang(engine):
    with pytest.raises(KeyError):
        for _ in engine.ask(PROMPT, image=IMAGE_A, max_tokens=MAX_TOKENS, stream=True):
            raise KeyError("consumer failed")


def test_a_chat_reuses_its_kv_cache(engine, cli_answer):
    chat = engine.chat()
    assert chat.ask(PROMPT, image=IMAGE_A, max_tokens=MAX_TOKENS) == cli_answer(IMAGE_A)
    first = chat.last
    assert first["prompt_tokens"] == 40  # the goldens' prompt: 25 ids with 16 image positions for one
    used = chat.context_used
    chat.ask("What colours does it have?", max_tokens=4)
    # Only the new user turn (and the end of the answer before it, as far as its re-tokenised text differs
    # from the tokens generated) is prefilled, not the conversation again, which is `used` positions long.
    assert 0 < chat.last["prompt_tokens"] < used
    assert chat.context_used > used
    chat.reset()
    assert chat.context_used == 0
    assert chat.ask(PROMPT, image=IMAGE_A, max_tokens=MAX_TOKENS) == cli_answer(IMAGE_A)
    assert chat.last["prompt_tokens"] == 40


def test_embed_image_shapes(engine):
    embeds = engine.embed_image(IMAGE_A)
    assert embeds.dtype == np.float32
    assert embeds.shape == (16, 64)  # (256 / 64)^2 image tokens of the tiny model's 64-wide LLM
    embeds_again, tower = engine.embed_image(Image.open(IMAGE_A), features=True)
    np.testing.assert_array_equal(embeds, embeds_again)
    assert tower.shape == (16, engine.info["vision_channels"])
    assert np.isfinite(tower).all()


def test_caption_yields_cli_records(engine, cli_answer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    records = list(engine.caption([IMAGE_A, broken, str(IMAGE_B)], max_tokens=MAX_TOKENS))
    assert [r["path"] for r in records] == [str(IMAGE_A), str(broken), str(IMAGE_B)]
    assert records[0]["text"] == cli_answer(IMAGE_A)
    assert records[0]["prompt_tokens"] == 40
    assert 0 < records[0]["tokens"] <= MAX_TOKENS
    assert {"preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms"} <= records[0]["timings"].keys()
    assert "broken.jpg" in records[1]["error"] and "text" not in records[1]
    assert records[2]["text"] == cli_answer(IMAGE_B)


def test_engine_errors_raise_fastvlm_error_with_the_message(engine, tmp_path):
    with pytest.raises(fastvlm.Error, match="/no/such/model"):
        fastvlm.Engine("/no/such/model")
    missing = tmp_path / "missing.png"
    with pytest.raises(fastvlm.Error, match="missing.png"):
        engine.ask(PROMPT, image=missing)
    with pytest.raises(fastvlm.Error):
        engine.embed_image(b"not an image at all")
    with pytest.raises(fastvlm.Error, match="dtype"):
        fastvlm.Engine(MODEL, dtype="f64")
    with pytest.raises(fastvlm.Error, match="uint8"):
        engine.ask(PROMPT, image=np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(fastvlm.Error, match="context"):
        fastvlm.Engine(MODEL, context=32).ask(PROMPT, image=IMAGE_A)
    assert issubclass(fastvlm.Error, RuntimeError)


def test_the_gil_is_released_while_the_engine_computes(engine):
    # A Python thread ticks while the main thread is inside one long ask; with the GIL held through the
    # call it could not run at all between the call's start and its end.
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        begin = time.perf_counter()
        engine.ask(PROMPT, image=IMAGE_A, max_tokens=400)
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    assert end - begin > 0.1, "the ask was too short to tell"
    inside = [t for t in ticks if begin + 0.02 < t < end - 0.02]
    assert len(inside) >= 5, (len(inside), end - begin)
