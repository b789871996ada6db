"""A built wheel works on its own: console script, package data (the web page), every layer's modules."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment holding only the wheel built from this checkout (plus, through a
    .pth file, the test environment's third-party packages: torch is not installed twice)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("ptflow-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_holds_every_module_and_the_console_script_runs(fresh_venv):
    python = fresh_venv / "bin" / "python"
    code = ("import ptflow, pathlib; root = pathlib.Path(ptflow.__file__).parent; "
            "print(root); print(sorted(p.relative_to(root).as_posix() for p in root.rglob('*.py')))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ""}).stdout.splitlines()
    assert out[0].startswith(str(fresh_venv))  # the wheel's copy, not this checkout
    source = sorted(p.relative_to(REPO / "src" / "ptflow").as_posix() for p in (REPO / "src" / "ptflow").rglob("*.py"))
    assert eval(out[1]) == source
    done = subprocess.run([str(fresh_venv / "bin" / "ptflow"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "train" in done.stdout and "serve" in done.stdout


def test_the_wheel_serves_its_web_page(fresh_venv, trained):
    import httpx
    from helpers.serving import start_command, stop

    server, url = start_command([str(fresh_venv / "bin" / "ptflow"), "serve", "--model_fn", str(trained["safetensors"]),
                                 "--port", "0"], env={**os.environ, "PYTHONPATH": ""}, ready_within=30)
    try:
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "<canvas" in page.text
    finally:
        stop(server)
