"""Faults: kill -9, a full or read-only disk during a save, runs started or resumed at the same
moment, interrupted downloads, and run folders copied from elsewhere.

    python -m pytest -q tests/test_faults.py

The disk tests mount a small tmpfs, so they run as root only (CI does) and skip elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers.children import Child, run
from helpers.kill_loop import kill_and_resume, train_args
from safetensors.torch import load_file

from ptflow.errors import PtflowError
from ptflow.training.checkpoint import read_checkpoint


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]


# --- kill -9 ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_at_random_moments_and_during_saves_loses_nothing(tmp_path):
    tally = kill_and_resume(tmp_path, kills=20)
    assert tally.injected >= 20
    assert tally.lost == []
    assert tally.survived == tally.injected
    assert set(tally.by_kind) >= {"replace-before", "fsync"}  # kills inside saves did land


# --- a full or read-only disk during a save ----------------------------------------------------

@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m"):
    """A tmpfs of `size` at path, or a skip where this process cannot mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write zeros into disk/filler until the file system refuses: the disk is then full."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(bytes(1 << 16))
                f.flush()
    return filler


def at_epoch_end(monkeypatch, epoch: int, action) -> None:
    """Call action() once, as epoch `epoch` ends (after its checkpoint was saved)."""
    from ptflow.training import runs

    original = runs.append_metrics

    def append(run, record):
        original(run, record)
        if record["epoch"] == epoch:
            action()

    monkeypatch.setattr(runs, "append_metrics", append)


def digits_flags(runs_dir: Path, name: str, epochs: int = 4) -> list[str]:
    # The runs compared train here (cli) and in child processes: on the same thread count, named
    return ["train", "--dataset", "digits", "--n_epochs", str(epochs), "--batch_size", "64", "--use_dropout",
            "--verbose", "0", "--runs_dir", runs_dir, "--run_name", name, "--num_threads", "1"]


def test_a_full_disk_during_a_save_fails_cleanly_and_resumes(tmp_path, cli, monkeypatch):
    assert cli(*digits_flags(tmp_path / "runs", "alone"))[0] == 0
    with small_disk(tmp_path / "disk") as disk:
        model = disk / "model.safetensors"
        assert cli(*digits_flags(disk / "runs", "first", 1), "--model_fn", model)[0] == 0
        before = model.read_bytes()
        filled = []
        at_epoch_end(monkeypatch, 2, lambda: filled.append(fill(disk)))
        code, _, err = cli(*digits_flags(disk / "runs", "full"), "--model_fn", model)
        assert code == 1 and filled
        assert err.strip().splitlines()[-1].startswith("ptflow train: error: cannot write") and \
            "No space left on device" in err and "Traceback" not in err
        run_dir = disk / "runs" / "full"
        assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
        assert read_checkpoint(run_dir / "checkpoint.safetensors")[1]["epoch"] == 2  # the last good one
        assert model.read_bytes() == before  # the previous model file, untouched
        assert temporaries(disk) == []
        monkeypatch.undo()
        filled[0].unlink()
        code, _, err = cli("train", "--resume", run_dir)
        assert code == 0, err
        assert same_weights(run_dir / "model.safetensors", tmp_path / "runs" / "alone" / "model.safetensors")


def test_a_read_only_run_folder_during_a_save_fails_cleanly_and_resumes(tmp_path, cli):
    assert cli(*digits_flags(tmp_path / "runs", "alone"))[0] == 0
    with small_disk(tmp_path / "disk") as disk:
        go = tmp_path / "go"
        # renames: config.json, env.json, run.json, checkpoints 1, 2, 3: stop before the third takes its name
        child = Child(digits_flags(disk / "runs", "ro"), tmp_path,
                      fault={"call": "replace", "index": 6, "stage": "pause", "until": str(go)})
        run_dir = disk / "runs" / "ro"
        for _ in range(1200):
            if len(temporaries(run_dir)) and (run_dir / "metrics.jsonl").is_file() and \
                    len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2:
                break
            threading.Event().wait(0.05)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        go.touch()
        result = child.wait()
        assert result.code == 1 and "Read-only file system" in result.err and "Traceback" not in result.err
        assert result.err.strip().splitlines()[-1].startswith("ptflow train: error: cannot write")
        assert read_checkpoint(run_dir / "checkpoint.safetensors")[1]["epoch"] == 2  # the last good one
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        code, _, err = cli("train", "--resume", run_dir)  # its process is gone: the run shows as crashed
        assert code == 0, err
        assert temporaries(disk) == []  # the one a read-only disk kept is removed on resume
        assert same_weights(run_dir / "model.safetensors", tmp_path / "runs" / "alone" / "model.safetensors")


def test_a_write_error_is_one_line_and_leaves_no_temporary_file(tmp_path):
    from ptflow.files import atomic_write_text

    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(PtflowError, match="a file is in the way"):
        atomic_write_text(tmp_path / "blocker" / "x.json", "{}")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(PtflowError, match="a folder is in the way"):
        atomic_write_text(tmp_path / "folder.json", "{}")
    assert temporaries(tmp_path) == []


# --- concurrency ---------------------------------------------------------------------------------

def test_runs_started_at_the_same_moment_get_their_own_folders(tmp_path, monkeypatch):
    from ptflow.training import runs

    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")  # the very same second
    barrier = threading.Barrier(12)
    made = []

    def start():
        barrier.wait()
        path = runs.create(str(tmp_path), "digits", "mlp")
        made.append(path)
        runs.release(path)

    threads = [threading.Thread(target=start) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 12 and len(set(made)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made)


def test_cli_runs_started_together_never_share_a_folder(tmp_path):
    args = ["train", "--dataset", "digits", "--n_epochs", "1", "--verbose", "0", "--runs_dir", tmp_path / "runs"]
    children = [Child(args, tmp_path) for _ in range(4)]
    results = [c.wait() for c in children]
    assert [r.code for r in results] == [0] * 4, [r.err for r in results]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 4
    pids = {json.loads((f / "run.json").read_text())["pid"] for f in folders}
    assert len(pids) == 4  # each folder was written by one process only
    assert all(len((f / "metrics.jsonl").read_text().splitlines()) == 1 for f in folders)


def interrupted_run(root: Path, name: str, epochs: int) -> Path:
    """A run killed (-9) right after the checkpoint of its first epoch took its name."""
    args = train_args(root / "runs", name, epochs)
    # renames: config.json, env.json, run.json, then the first checkpoint
    result = run(args, root, fault={"call": "replace", "index": 4, "stage": "after"})
    assert result.code == -9
    run_dir = root / "runs" / name
    assert read_checkpoint(run_dir / "checkpoint.safetensors")[1]["epoch"] == 1
    return run_dir


def test_a_second_resume_of_a_run_being_resumed_is_refused(tmp_path):
    reference = run(train_args(tmp_path / "runs", "alone", 4), tmp_path)
    assert reference.code == 0
    run_dir = interrupted_run(tmp_path, "busy", 4)
    go = tmp_path / "go"
    first = Child(train_args(tmp_path / "runs", "busy", 4) + ["--resume", run_dir], tmp_path,
                  fault={"call": "replace", "index": 3, "stage": "pause", "until": str(go)})
    try:
        for _ in range(600):  # until the first resume holds the run (it has rewritten run.json)
            record = json.loads((run_dir / "run.json").read_text())
            if record.get("pid") == first.process.pid:
                break
            threading.Event().wait(0.05)
        second = run(train_args(tmp_path / "runs", "busy", 4) + ["--resume", run_dir], tmp_path)
        assert second.code == 1
        assert second.err.count("\n") == 1 and "being trained by another process" in second.err
        assert f"pid {first.process.pid}" in second.err
    finally:
        go.touch()
    assert first.wait().code == 0
    assert same_weights(run_dir / "model.safetensors", tmp_path / "runs" / "alone" / "model.safetensors")


def test_two_resumes_at_the_same_moment_one_trains(tmp_path):
    reference = run(train_args(tmp_path / "runs", "alone", 4), tmp_path)
    assert reference.code == 0
    run_dir = interrupted_run(tmp_path, "raced", 4)
    children = [Child(train_args(tmp_path / "runs", "raced", 4) + ["--resume", run_dir], tmp_path)
                for _ in range(3)]
    results = [c.wait() for c in children]
    assert sorted(r.code for r in results).count(0) == 1, [r.err for r in results]
    for r in results:
        assert r.code == 0 or ("being trained by another process" in r.err or "already finished" in r.err), r.err
    assert same_weights(run_dir / "model.safetensors", tmp_path / "runs" / "alone" / "model.safetensors")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # never interleaved


# --- copied run folders ------------------------------------------------------------------------

def test_resuming_a_copied_run_writes_only_where_asked(tmp_path, cli):
    outside = tmp_path / "outside"
    run_dir = interrupted_run(tmp_path, "original", 3)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(model_fn=str(outside / "planted.pth"), runs_dir=str(outside / "runs"))
    (run_dir / "config.json").write_text(json.dumps(config))
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(run_dir, copy)
    second_copy = tmp_path / "another" / "copied"
    shutil.copytree(run_dir, second_copy)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, _, err = cli("train", "--resume", copy)
    assert code == 0, err
    assert "--model_fn" in err  # a warning: the saved --model_fn is not used
    assert not outside.exists()
    assert (copy / "model.safetensors").is_file()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert json.loads((copy / "config.json").read_text())["runs_dir"] == str(copy.parent)
    code, _, err = cli("train", "--resume", second_copy, "--model_fn", tmp_path / "asked.pth")
    assert code == 0, err
    assert (tmp_path / "asked.pth").is_file() and not outside.exists()


def test_a_run_folder_with_links_in_it_cannot_make_a_resume_write_through_them(tmp_path, cli):
    """A copied run folder whose metrics.jsonl links to a file elsewhere (~/.bashrc, say): the
    resume must refuse to append through the link, in one line, and leave that file unchanged."""
    run_dir = interrupted_run(tmp_path, "linked", 3)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    (run_dir / "metrics.jsonl").symlink_to(victim)
    code, _, err = cli("train", "--resume", run_dir)
    assert code != 0 and "symbolic link" in err and len(err.strip().splitlines()) == 1, err
    assert victim.read_text() == "precious\n"


def test_run_files_are_never_appended_or_rewritten_through_a_link(tmp_path):
    from ptflow.errors import PtflowError
    from ptflow.files import append_line, overwrite_in_place

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(victim)
    for write in (lambda: append_line(link, "{}"), lambda: overwrite_in_place(link, "{}")):
        with pytest.raises((PtflowError, OSError)) as caught:
            write()
        assert isinstance(caught.value, OSError) or "symbolic link" in str(caught.value)
    assert victim.read_text() == "precious\n"


# --- downloads -----------------------------------------------------------------------------------

class Mirror(BaseHTTPRequestHandler):
    """Serves `body` for every path; `cut` closes the connection after that many bytes."""

    body = b""
    cut: int | None = None

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[:self.cut] if self.cut is not None else self.body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def mirror(body: bytes, cut: int | None = None):
    handler = type("Handler", (Mirror,), {"body": body, "cut": cut})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def local_spec(url: str, body: bytes):
    from ptflow.data.registry import SPECS

    md5 = hashlib.md5(body).hexdigest()
    return replace(SPECS["kmnist"], mirrors=(url,), md5={stem: md5 for stem in SPECS["kmnist"].md5})


@pytest.mark.parametrize("cut, checksum", [(5000, True), (None, False)], ids=["interrupted", "wrong-checksum"])
def test_a_bad_download_is_never_cached(tmp_path, monkeypatch, cut, checksum):
    from ptflow.data import idx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PTFLOW_DATA_DIR", raising=False)
    body = os.urandom(20_000)
    with mirror(body, cut) as url:
        spec = local_spec(url, body if checksum else b"other bytes")
        with pytest.raises(PtflowError, match="download failed"):
            idx.locate(spec, str(tmp_path / "nowhere"))
    cached = tmp_path / "cache" / "ptflow" / "kmnist"
    assert not cached.exists() or list(cached.iterdir()) == []


def test_a_good_download_is_cached_and_a_damaged_cache_is_fetched_again(tmp_path, monkeypatch):
    from ptflow.data import idx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PTFLOW_DATA_DIR", raising=False)
    body = os.urandom(20_000)
    with mirror(body) as url:
        spec = local_spec(url, body)
        paths = idx.locate(spec, None)
        assert all(p.read_bytes() == body for p in paths.values())
        victim = next(iter(paths.values()))
        victim.write_bytes(body[:100])  # a cache file damaged after the fact
        assert idx.locate(spec, None)[next(iter(paths))].read_bytes() == body


def test_a_checkpoint_with_foreign_optimizer_state_is_refused_before_training(tmp_path, cli):
    from ptflow.training.checkpoint import save_checkpoint

    run_dir = interrupted_run(tmp_path, "tampered", 3)
    tensors, meta = read_checkpoint(run_dir / "checkpoint.safetensors")
    key = next(k for k in tensors if k.startswith("optimizer/") and k.endswith("exp_avg"))
    tensors[key] = torch.zeros(tensors[key].numel() + 1)
    save_checkpoint(run_dir / "checkpoint.safetensors", tensors, {k: v for k, v in meta.items()
                                                                 if k not in ("format", "format_version")})
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, _, err = cli("train", "--resume", run_dir)
    assert code == 1 and "corrupt checkpoint" in err and "exp_avg" in err
    assert err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before  # a refusal changes nothing
