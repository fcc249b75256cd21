# Shared fixtures of the Python package's tests: the tiny model, its golden images, one engine for the
# whole run (loading is the slow part), and `fastvlm run`'s answers to compare against.
import json
import os
import subprocess
from pathlib import Path

import pytest

import fastvlm

MODEL = Path(os.environ["FASTVLM_MODEL"])
BIN = os.environ["FASTVLM_BIN"]
IMAGE_A = MODEL / "golden" / "image_a_320x200.png"
IMAGE_B = MODEL / "golden" / "image_b_97x131.jpg"
MAX_TOKENS = 16


@pytest.fixture(scope="session")
def engine() -> fastvlm.Engine:
    return fastvlm.Engine(MODEL)


@pytest.fixture(scope="session")
def cli_answer():
    """The greedy answer of the `fastvlm` CLI for an image, with the tests' prompt and token budget."""
    answers = {}

    def answer(image: Path) -> str:
        if image not in answers:
            out = subprocess.run([BIN, "run", "-m", str(MODEL), "--image", str(image), "-p", "Describe the image.",
                                  "-n", str(MAX_TOKENS), "--temp", "0", "--json"],
                                 check=True, capture_output=True, text=True).stdout
            answers[image] = json.loads(out)["text"]
        return answers[image]

    return answer
