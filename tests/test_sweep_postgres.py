"""`ptflow sweep --storage postgresql://...`: two workers started at once, standing for two
machines, share one study in a real PostgreSQL server; an unreachable server is a one-line error.

The server is a throwaway cluster made with initdb in a temporary folder for the session. The
tests skip where the PostgreSQL server binaries (Debian: `apt-get install postgresql`) or a Python
driver (`pip install 'psycopg[binary]'`) are missing.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
import sqlalchemy  # noqa: E402  (Optuna's own dependency)
from helpers import free_port  # noqa: E402

from ptflow.config import TrainConfig  # noqa: E402

SPACE = ["--param", "lr=loguniform:1e-3:3e-2", "--param", "n_layers=int:2:4"]
WORKER_TRIALS = (2, 3)  # trials each worker runs; different, so that each worker's count is checked
SERVER_USER = "postgres"  # initdb and postgres refuse to run as root: Debian's account for them


def server_bin() -> Path | None:
    """The server programs' folder: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent  # resolved: a link on PATH may stand for initdb alone
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: [int(n) for n in p.parents[1].name.split(".") if n.isdigit()])
    return found[-1].parent if found else None


def driver_scheme() -> str:
    """A URL scheme whose driver is installed. Plain postgresql:// means psycopg 3 from SQLAlchemy 2.1
    on, psycopg2 before it; the explicit schemes are the fallbacks."""
    for scheme in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        try:
            sqlalchemy.create_engine(f"{scheme}://user@127.0.0.1/db").dispose()  # imports the driver, no connection
        except (ImportError, sqlalchemy.exc.NoSuchModuleError):
            continue
        return scheme
    pytest.skip("no PostgreSQL driver: pip install 'psycopg[binary]'")


def as_server_user(root: Path) -> list[str]:
    """The command prefix that runs the server programs: none, or runuser to postgres when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.skip(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as")
    if not shutil.which("runuser"):
        pytest.skip("running as root and runuser is missing")
    shutil.chown(root, SERVER_USER)
    return ["runuser", "-u", SERVER_USER, "--"]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on a free 127.0.0.1 port with an empty database; yields its URL."""
    bindir = server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    scheme = driver_scheme()
    # Not tmp_path_factory: its folders are private to the test's user, and the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="ptflow-pg-"))
    data, password, prefix = root / "data", secrets.token_hex(12), []

    def server(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, str(bindir / args[0]), *args[1:]], cwd=root, capture_output=True, text=True)

    try:
        prefix += as_server_user(root)
        (root / "password").write_text(password)  # root/ is readable by its owner alone: us, or the server's user
        done = server("initdb", "-D", str(data), "-U", "ptflow", "--auth=scram-sha-256",
                      f"--pwfile={root / 'password'}", "--no-locale", "-E", "UTF8")
        assert done.returncode == 0, done.stdout + done.stderr
        for _ in range(3):  # the port was free a moment ago; another process may have taken it since
            port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={shlex.quote(str(root))} "
                       f"-c fsync=off")  # a throwaway cluster: no need to wait for the disk
            done = server("pg_ctl", "start", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "30",
                          "-o", options)
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stdout + done.stderr + (root / "server.log").read_text()
        created = subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ptflow",
                                  "sweeps"], env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True)
        assert created.returncode == 0, created.stderr
        yield f"{scheme}://ptflow:{password}@127.0.0.1:{port}/sweeps"
    finally:
        if data.is_dir():
            server("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
        shutil.rmtree(root, ignore_errors=True)


def sweep_command(*args) -> list[str]:
    return [sys.executable, "-m", "ptflow", "sweep", *map(str, args)]


def leaderboard(out: str) -> dict[int, tuple[str, float | None]]:
    """A worker's printed leaderboard: trial -> (state, best valid loss)."""
    lines = out[out.index("trial  "):].splitlines()[1:]
    rows = {}
    for line in lines:
        cells = line.split()
        if not cells or not cells[0].isdigit():
            break
        rows[int(cells[0])] = (cells[1], None if cells[-3] == "-" else float(cells[-3]))
    return rows


def test_two_workers_share_one_study_in_postgresql(postgres_url, npz_data, tmp_path):
    study_name = "shared"
    workers = []
    for i, trials in enumerate(WORKER_TRIALS):  # both at once, each with its own runs folder, as on two machines
        runs_dir = tmp_path / f"machine{i}"
        command = sweep_command("--trials", trials, *SPACE, "--study", study_name, "--storage", postgres_url,
                                "--dataset", f"npz:{npz_data}", "--n_epochs", 2, "--batch_size", 32,
                                "--device", "cpu", "--runs_dir", runs_dir)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        workers.append((process, runs_dir, trials))
    outputs = [process.communicate(timeout=300) for process, _, _ in workers]
    password = sqlalchemy.engine.make_url(postgres_url).password
    for (process, _, _), (out, err) in zip(workers, outputs):
        assert process.returncode == 0, out + err
        assert "Traceback" not in err
        assert password not in out + err and "ptflow:***@127.0.0.1" in out  # the URL is shown redacted

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.trials
    assert len(trials) == sum(WORKER_TRIALS)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no number handed out twice
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}, [t.state.name for t in trials]
    assert study.user_attrs["ptflow_params"] == ["lr=loguniform:0.001:0.03", "n_layers=int:2:4"]
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len({d.name for d in run_dirs}) == len(trials)  # no two trials write one run folder
    for process, runs_dir, n_trials in workers:
        mine = [t for t in trials if t.user_attrs["pid"] == process.pid]
        assert len(mine) == n_trials  # each worker ran exactly its own --trials
        folders = sorted(p.name for p in runs_dir.glob(f"{study_name}-trial*"))
        assert folders == sorted(f"{study_name}-trial{t.number:03d}" for t in mine)
        for trial in mine:
            assert Path(trial.user_attrs["run_dir"]) == runs_dir.resolve() / f"{study_name}-trial{trial.number:03d}"

    # Each worker names the best of the trials finished when it ended. The worker whose last trial
    # ended last saw every trial finished, so it names the study's overall best.
    best = study.best_trial
    seen_all = []
    for out, _ in outputs:
        rows = leaderboard(out)
        finished = {n: loss for n, (state, loss) in rows.items() if state == "complete"}
        named = int(re.search(r"Best trial (\d+):", out).group(1))
        assert finished[named] == min(finished.values())
        if len(rows) == len(trials) and all(state in ("complete", "pruned") for state, _ in rows.values()):
            seen_all.append((named, out))
    assert seen_all
    for named, out in seen_all:
        assert named == best.number
        words = shlex.split(out.split("Best configuration:\n")[1].splitlines()[0])
        assert float(words[words.index("--lr") + 1]) == best.params["lr"]
        n_layers = int(words[words.index("--n_layers") + 1]) if "--n_layers" in words else TrainConfig().n_layers
        assert n_layers == best.params["n_layers"]
    # The overall best was judged on the test split, and by one worker only.
    judged = sum(out.count(f"Test split, judged once, for the best trial {best.number} ") for out, _ in outputs)
    assert judged == 1, outputs
    assert json.loads((Path(best.user_attrs["run_dir"]) / "run.json").read_text())["test_acc"] is not None


def test_an_unreachable_postgresql_server_is_a_one_line_error(tmp_path):
    scheme = driver_scheme()
    url = f"{scheme}://ptflow:hunter2@127.0.0.1:{free_port()}/sweeps"  # nothing listens on a port just freed
    done = subprocess.run(sweep_command("--trials", 1, "--param", "lr=loguniform:1e-4:1e-2", "--storage", url,
                                        "--dataset", "digits", "--runs_dir", tmp_path / "runs"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open sweep storage" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stdout + done.stderr
    assert not list((tmp_path / "runs").glob("*trial*"))  # nothing trained
