"""Shards read from where clusters keep them: a local HTTP server on 127.0.0.1, ``pipe:``
commands, fsspec filesystems, each against the same shards read from disk."""
import functools
import http.server
import os
import threading

import fsspec
import numpy as np
import pytest
from test_data import write_shards

from mindclip.data import build_source, train_loader
from mindclip.data.shards import ShardError, shard_samples
from mindclip.data.webdataset import expand_pattern
from mindclip.tokenizer import CLIPTokenizer


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under ``/drop/`` it announces the whole file and sends half of it,
    then hangs up (a server that fails mid-stream)."""

    def do_GET(self):
        if not self.path.startswith("/drop/"):
            return super().do_GET()
        with open(os.path.join(self.directory, self.path[len("/drop/"):]), "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(local pattern, http pattern, folder) of 4 shards x 3 samples behind a local server."""
    root = tmp_path_factory.mktemp("shards")
    pattern = write_shards(root, n_shards=4, per_shard=3, caption=lambda i: f"sample {i}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield pattern, f"{url}/{os.path.basename(pattern)}", root
    server.shutdown()


def _samples(urls):
    return [item if isinstance(item, ShardError) else (item[0], sorted(item[1].items()))
            for item in shard_samples(urls)]


def test_every_transport_reads_the_samples_on_disk(served):
    pattern, http_pattern, root = served
    local = expand_pattern(pattern)
    expected = _samples(local)
    assert len(expected) == 12 and [k for k, _ in expected[:2]] == ["000000", "000001"]
    assert {ext for _, parts in expected for ext, _ in parts} == {"jpg", "txt", "json"}
    memory = []
    for path in local:  # an fsspec filesystem stands for s3:// and the other object stores
        with open(path, "rb") as src, fsspec.open(f"memory://bucket/{os.path.basename(path)}", "wb") as dst:
            dst.write(src.read())
        memory.append(f"memory://bucket/{os.path.basename(path)}")
    for urls in (expand_pattern(http_pattern), [f"pipe:cat {p}" for p in local],
                 expand_pattern(f"pipe:cat {pattern}"), ["file://" + p for p in local], memory):
        assert _samples(urls) == expected, urls[0]


def test_a_failing_shard_is_named_and_the_next_one_read(served):
    pattern, http_pattern, root = served
    local = expand_pattern(pattern)
    base = http_pattern.rsplit("/", 1)[0]
    shard1 = os.path.basename(local[1])
    urls = [local[0], f"{base}/drop/{shard1}", f"pipe:cat {local[2]}; exit 3", "pipe:false",
            f"{base}/absent.tar", "nosuch://bucket/0.tar", local[3]]
    got = _samples(urls)
    errors = [str(e) for e in got if isinstance(e, ShardError)]
    keys = [k for k, *_ in (g for g in got if not isinstance(g, ShardError))]
    # shards 0 and 3 whole; of the dropped shard and the failing command only samples that
    # were complete before the failure (the sample being read when it came is dropped)
    assert keys[:3] == ["000000", "000001", "000002"] and keys[-3:] == ["000009", "000010", "000011"]
    assert set(keys[3:-3]) <= {"000003", "000004", "000006", "000007"}
    assert len(errors) == 5
    assert errors[0].startswith(f"{base}/drop/{shard1}: ")
    assert errors[1].startswith(f"pipe:cat {local[2]}; exit 3: command exited with status 3")
    assert errors[2] == "pipe:false: command exited with status 1"
    assert errors[3].startswith(f"{base}/absent.tar: ") and "404" in errors[3]
    assert errors[4].startswith("nosuch://bucket/0.tar: ")


def _rank_rows(pattern, rank, world, num_samples=12, **kw):
    src = build_source({"type": "webdataset", "path": pattern, "train_num_samples": num_samples, **kw})
    loader = train_loader(src, CLIPTokenizer(), 32, batch_size=1, rank=rank, world=world, seed=3)
    return [(images, tokens) for images, tokens in loader], loader


@pytest.mark.parametrize("n_shards", [4, 1])
def test_ranks_read_disjoint_samples_wherever_the_shards_are(served, n_shards):
    pattern, http_pattern, root = served
    if n_shards == 1:  # fewer shards than ranks: the ranks split the samples
        pattern, http_pattern = (p.replace("{00000..00003}", "00002") for p in (pattern, http_pattern))
    per_rank = []
    for rank in (0, 1):
        local, _ = _rank_rows(pattern, rank, 2, num_samples=3 * n_shards)
        for remote in (http_pattern, f"pipe:cat {pattern}"):
            rows, _ = _rank_rows(remote, rank, 2, num_samples=3 * n_shards)
            assert len(rows) == len(local)
            assert all(np.array_equal(a, b) for row, other in zip(rows, local) for a, b in zip(row, other))
        per_rank.append({tokens.tobytes() for _, batch in local for tokens in batch})  # captions are unique
    assert len(per_rank[0]) == len(per_rank[1]) == (3 * n_shards) // 2
    assert not per_rank[0] & per_rank[1]


def test_remote_shards_need_the_epoch_size(served):
    with pytest.raises(ValueError, match=r"train_num_samples is needed for remote shards \(http://127"):
        build_source({"type": "webdataset", "path": served[1]})


def _train(out, path, **dataset):
    from mindclip.config import load_config
    from mindclip.trainer import Trainer

    cfg = load_config(None, {"output_dir": str(out), "model.name": "ViT-Tiny-8", "seed": 5,
                             "train_dataset.type": "webdataset", "train_dataset.path": path,
                             "train_dataset.train_num_samples": 12, "train_dataset.num_workers": 1,
                             "runner.batch_size": 4, "runner.progress_bar": False, "runner.log_interval": 1,
                             **{f"train_dataset.{k}": v for k, v in dataset.items()}})
    trainer = Trainer(config=cfg)
    return trainer.train(), [r["loss"] for r in _metrics(out) if r.get("type") == "train"]


def _metrics(out):
    import json

    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_from_http_equals_training_from_disk(served, tmp_path):
    """The loss curve (pipe: reads the same rows as disk and http, tested above)."""
    pattern, http_pattern, root = served
    _, local = _train(tmp_path / "local", pattern)
    _, remote = _train(tmp_path / "http", http_pattern)
    assert len(local) == 3 and remote == local


def test_a_shard_dropped_mid_stream_is_counted_against_the_bound(served, tmp_path):
    pattern, http_pattern, root = served
    base = http_pattern.rsplit("/", 1)[0]
    dropping = "::".join(f"{base}/{name}" for name in
                         ("shard-00000.tar", "drop/shard-00001.tar", "shard-00002.tar", "shard-00003.tar"))
    summary, losses = _train(tmp_path / "lenient", dropping, max_skip_fraction=0.2)
    assert summary["skipped_images"] == 1 and len(losses) == 3
    with pytest.raises(ValueError, match=r"epoch 0: 1 of \d+ training images could not be read \(more than "
                                         r"train_dataset.max_skip_fraction 0.05\): .*drop/shard-00001.tar: "):
        _train(tmp_path / "strict", dropping)
