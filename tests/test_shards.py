"""Tar shards: `ptflow data pack folder:SRC --out DIR` writes them, `--dataset shards:DIR` trains on them.

The references: the photo folder itself (a run on its shards trains the same weights, since the
shards list the same examples in the same order with the same labels and are decoded by the same
function), the folder's files (the `webdataset` library, which ptflow did not write, reads each
member back as the file's bytes), packing twice (the same bytes), and, under torchrun, where each
process takes whole shards, the order's invariants and the same model in memory and streamed.

    python -m pytest -q tests/test_shards.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error
from helpers.photos import write_photos

SMALL = ("--model", "cnn", "--n_epochs", "1", "--batch_size", "16", "--num_threads", "1", "--verbose", "0")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(photo folder with a train/ test/ split, its shards packed 10 examples to a shard)."""
    root = tmp_path_factory.mktemp("shards")
    photos = write_photos(root / "photos", split=True)
    from ptflow.data.pack import pack

    pack(f"folder:{photos.root}", root / "sh", shard_size=10)
    return photos, root / "sh"


def weights(run: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(run / "model.safetensors")


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_training_on_the_shards_gives_the_weights_of_training_on_the_folder(cli, tmp_path, packed, in_memory):
    photos, shards = packed
    runs = tmp_path / "runs"
    for name, dataset in (("folder", f"folder:{photos.root}"), ("shards", f"shards:{shards}")):
        code, _, err = cli("train", "--dataset", dataset, "--data_in_memory", in_memory, "--runs_dir", runs,
                           "--run_name", name, *SMALL)
        assert code == 0, err
    folder, shards_run = weights(runs / "folder"), weights(runs / "shards")
    assert folder.keys() == shards_run.keys()
    for key in folder:
        assert np.array_equal(folder[key], shards_run[key]), key


def test_the_index_lists_the_folders_examples_in_order_with_their_split(packed):
    from ptflow.data.formats import folder, shards

    photos, root = packed
    listed, read = folder.load(photos.root), shards.load(root)
    assert read.classes == listed.classes
    for ours, theirs in ((read.x, listed.x), (read.x_test, listed.x_test)):
        assert [ours.source(i) for i in range(len(ours))] == [Path(f).read_bytes() for f in theirs.files]
        assert np.array_equal(ours.y, theirs.y) and np.array_equal(ours.sizes, theirs.sizes)
        assert np.array_equal(ours.gray, theirs.gray)
    index = json.loads((root / "index.json").read_text())
    assert index["counts"] == {"train": len(listed.x), "test": len(listed.x_test)}
    for shard in index["shards"]:
        data = (root / shard["name"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
        with tarfile.open(root / shard["name"]) as tar:  # the offsets are tar's own
            members = {m.name: m for m in tar.getmembers()}
            assert all(m.isreg() and m.mtime == 0 and m.mode == 0o644 and m.uid == 0 for m in members.values())
            for offset, length, label, *_, member in shard["examples"]:
                assert (members[member].offset_data, members[member].size) == (offset, length)
                key = member.split(".")[0]
                assert tar.extractfile(members[f"{key}.cls"]).read() == str(label).encode()


def test_packing_twice_writes_the_same_bytes(tmp_path, packed):
    from ptflow.data.pack import pack

    photos, first = packed
    pack(f"folder:{photos.root}", tmp_path / "again", shard_size=10)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    assert all((first / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in names)


def test_the_webdataset_library_reads_every_member_as_the_source_files_bytes(packed):
    webdataset = pytest.importorskip("webdataset")
    from ptflow.data.formats import folder

    photos, root = packed
    listed = folder.load(photos.root)
    files = [*listed.x.files, *listed.x_test.files]
    labels = [*listed.x.y, *listed.x_test.y]
    index = json.loads((root / "index.json").read_text())
    urls = [str(root / s["name"]) for s in index["shards"]]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(len(files))]
    for sample, file, label in zip(samples, files, labels):
        suffix = Path(file).suffix.lower()[1:]
        assert sample[suffix] == Path(file).read_bytes()
        assert sample["cls"] == str(label).encode()


def hostile(root: Path, tmp_path: Path, change) -> Path:
    """A copy of the shards whose index change(index, folder) edited."""
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    index = json.loads((copy / "index.json").read_text())
    change(index, copy)
    (copy / "index.json").write_text(json.dumps(index))
    return copy


def rename_first(name):
    def change(index, folder):
        index["shards"][0]["name"] = index["splits"]["train"][0] = name
    return change


def truncate_first(index, folder):
    shard = folder / index["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:-1024])


def offset_past_the_end(index, folder):
    index["shards"][0]["examples"][-1][0] = index["shards"][0]["bytes"]


HOSTILE = {
    "parent": (rename_first("../sh/shard-000000.tar"), "not a plain file name"),
    "pipe": (rename_first("pipe:cat shard-000000.tar"), "not a plain file name"),
    "url": (rename_first("http://example.com/a.tar"), "not a plain file name"),
    "label type": (lambda i, f: i["shards"][0]["examples"][0].__setitem__(2, "1"), "an example must be"),
    "label range": (lambda i, f: i["shards"][0]["examples"][0].__setitem__(2, 99), "is not one of the 4"),
    "classes": (lambda i, f: i.__setitem__("classes", {"a": 1}), '"classes" must be'),
    "version": (lambda i, f: i.__setitem__("version", 2), "version 2"),
    "pickle member": (lambda i, f: i["shards"][0]["examples"][0].__setitem__(6, "00000000.pickle"),
                      "not named as an image"),
    "truncated": (truncate_first, "truncated or changed"),
    "offset past the end": (offset_past_the_end, "outside the shard"),
    "count": (lambda i, f: i["counts"].__setitem__("train", 1), '"counts"'),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_or_damaged_index_is_a_one_line_error(cli, tmp_path, packed, case):
    change, why = HOSTILE[case]
    copy = hostile(packed[1], tmp_path, change)
    code, _, err = cli("data", f"shards:{copy}", "--out", tmp_path / "grid.png")
    assert code != 0
    assert_one_line_error(err)
    assert why in err, err


def test_not_json_is_a_one_line_error(cli, tmp_path, packed):
    copy = hostile(packed[1], tmp_path, lambda i, f: None)
    (copy / "index.json").write_bytes(b"\x80\x04K\x01.")  # a pickle
    code, _, err = cli("data", f"shards:{copy}")
    assert code != 0 and "not a valid JSON index" in err
    assert_one_line_error(err)


def test_pack_refuses_an_existing_non_empty_out_and_a_broken_file(cli, tmp_path):
    photos = write_photos(tmp_path / "photos", per_class=4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, err = cli("data", "pack", f"folder:{photos.root}", "--out", tmp_path / "out")
    assert code != 0 and "not empty" in err
    assert_one_line_error(err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    broken = write_photos(tmp_path / "broken", per_class=4, broken=("truncated.jpg",))
    code, _, err = cli("data", "pack", f"folder:{broken.root}", "--out", tmp_path / "new")
    assert code != 0 and "truncated.jpg" in err
    assert_one_line_error(err)
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code, _, err = cli("data", "pack", f"folder:{photos.root}", "--out", tmp_path / "empty", "--shard_size", "5")
    assert code == 0, err
    assert len(list((tmp_path / "empty").glob("shard-*.tar"))) == 4  # 16 examples, 5 to a shard


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun's gloo jobs are tested on Linux")
def test_two_processes_under_torchrun_take_whole_shards_in_memory_as_streamed(tmp_path, packed):
    """Under torchrun each process takes whole shards (shard_order.py): the model differs from the
    one two processes train on the folder (a plain permutation), and is the same whether the
    shards are decoded into memory or streamed: the order depends on the data, not where it is."""
    photos, shards = packed
    runs = tmp_path / "runs"
    for name, dataset, in_memory in (("folder", f"folder:{photos.root}", "no"), ("streamed", f"shards:{shards}", "no"),
                                     ("in_memory", f"shards:{shards}", "yes")):
        done = subprocess.run([sys.executable, "-m", "ptflow", "train", "--dataset", dataset, "--data_in_memory",
                               in_memory, "--batch_size", "8", "--nproc_per_node", "2", "--runs_dir", str(runs),
                               "--run_name", name, *SMALL[:2], *SMALL[2:4], *SMALL[6:]],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    folder, streamed, in_memory = (weights(runs / name) for name in ("folder", "streamed", "in_memory"))
    assert all(np.array_equal(streamed[key], in_memory[key]) for key in streamed)
    assert not all(np.array_equal(folder[key], streamed[key]) for key in folder)


def _spans(n: int, batch_size: int, world: int) -> list[list[tuple[int, int]]]:
    from ptflow.training.loop import LoopSettings, _spans

    return _spans(n, LoopSettings(n_epochs=1, batch_size=batch_size, world=world))


@pytest.mark.parametrize(("sizes", "batch_size", "world"), [((10,) * 7 + (3,), 8, 2), ((5, 17, 9, 1, 30, 12), 6, 3),
                                                           ((4,) * 25, 16, 4), ((50,), 10, 2)])
def test_each_process_takes_whole_shards_and_every_example_once(sizes, batch_size, world):
    """The order is a permutation; a process's positions hold examples of its own shards, a run of
    the epoch's shard order with at most the two at its ends shared with a neighbour; every
    example but a last batch too small to split is trained."""
    import torch

    from ptflow.training.shard_order import order_by_shard

    shards = torch.cat([torch.full((size,), s) for s, size in enumerate(sizes)])
    shards = shards[torch.randperm(len(shards), generator=torch.Generator().manual_seed(1))]  # listed in any order
    spans = _spans(len(shards), batch_size, world)
    order = order_by_shard(shards, spans, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(shards)))
    held = []
    for rank_spans in spans:
        taken = torch.cat([order[lo:hi] for lo, hi in rank_spans])
        held.append(set(shards[taken].tolist()))
        whole = {s for s in held[-1] if (shards[taken] == s).sum() == sizes[s]}
        assert len(held[-1] - whole) <= 2  # only the shards at the ends of its piece are partly another's
    # the pieces are cut from one sequence of whole shards: each of the world - 1 cuts splits at most one
    assert sum(len(h) for h in held) <= len(set().union(*held)) + world - 1
    end = max(hi for rank_spans in spans for _, hi in rank_spans)
    assert len(shards) - end < 2 * world  # what is left out is a last batch too small to split


def test_the_order_is_the_seeds_and_changes_from_epoch_to_epoch():
    import torch

    from ptflow.training.shard_order import order_by_shard

    shards = torch.arange(40) // 10
    spans = _spans(40, 8, 2)
    first, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    epoch1, epoch1_again = order_by_shard(shards, spans, first), order_by_shard(shards, spans, again)
    assert torch.equal(epoch1, epoch1_again)
    assert not torch.equal(order_by_shard(shards, spans, first), epoch1)
