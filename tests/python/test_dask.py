# fastvlm.dask on a real local cluster (two worker processes on loopback): every path comes back once
# with the single-process engine's text, a bad image is an error record rather than a failed job, and
# each worker loads the model once.
import json
import shutil

import pytest

distributed = pytest.importorskip("distributed")  # Debian's python3-distributed (scripts/setup.sh)

import fastvlm
import fastvlm.dask
from conftest import IMAGE_A, IMAGE_B, MODEL

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_caption_on_a_local_cluster(client, engine, tmp_path):
    paths = []
    for i in range(3):  # copies under other names: distinct paths, known answers
        for image in (IMAGE_A, IMAGE_B):
            copy = tmp_path / f"{i}_{image.name}"
            shutil.copy(image, copy)
            paths.append(str(copy))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths.insert(3, str(broken))
    output = tmp_path / "captions.jsonl"

    records = list(fastvlm.dask.caption(paths, str(MODEL), client=client, partition_size=2, max_tokens=MAX_TOKENS,
                                        threads=1, output=output))

    by_path = {r["path"]: r for r in records}
    assert len(records) == len(paths) and by_path.keys() == set(paths)  # each path exactly once
    expected = {r["path"]: r for r in engine.caption(paths, max_tokens=MAX_TOKENS)}
    for path in paths:
        if path == str(broken):
            assert "broken.png" in by_path[path]["error"]
        else:
            assert by_path[path]["text"] == expected[path]["text"], path
            assert by_path[path]["prompt_tokens"] == expected[path]["prompt_tokens"]
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["path"] for r in written) == sorted(paths)

    # The engine stays loaded on each worker between partitions and calls: one per worker process.
    def loaded_engines():
        return [id(engine) for engine in fastvlm.dask._engines.values()]

    before = client.run(loaded_engines)
    assert all(len(ids) <= 1 for ids in before.values()) and any(before.values())
    again = list(fastvlm.dask.caption(paths[:2], str(MODEL), client=client, max_tokens=MAX_TOKENS, threads=1))
    assert {r["path"]: r["text"] for r in again} == {p: by_path[p]["text"] for p in paths[:2]}
    after = client.run(loaded_engines)
    assert all(after[w] == before[w] for w in before if before[w])

def test_a_model_that_cannot_load_fails_the_call(client):
    with pytest.raises(fastvlm.Error, match="/no/such/model"):
        list(fastvlm.dask.caption([str(IMAGE_A)], "/no/such/model", client=client))
