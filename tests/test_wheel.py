"""What ``python -m build`` makes: a wheel and an sdist holding the templates and static files,
and the wheel, installed with every extra in a clean venv, serving the demo from there."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import IO

import httpx
import pytest

from .conftest import unavailable
from .test_example import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "asgimon"
MARK = "<!-- served from the installed wheel -->"


def data_files() -> set[str]:
    """The package's files that are not Python: what a wheel most easily goes without."""
    found = {"asgimon/py.typed"}
    for folder in ("templates", "static"):
        for path in (PACKAGE / "dashboard" / folder).iterdir():
            found.add(path.relative_to(PACKAGE.parent).as_posix())
    return found


def run(
    argv: list[str], *, timeout: float, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def index_reachable() -> str | None:
    """Why the package index cannot be reached, or None if it answers."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/pip/", timeout=10) as response:
            response.read(1)
    except OSError as exc:
        return f"{index}: {exc}"
    return None


def read_line(stream: IO[str], timeout: float) -> str:
    # readline() in a thread: a demo that hangs before printing must not hang the test.
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"nothing printed within {timeout:g} s")


@pytest.mark.slow
def test_the_wheel_installs_in_a_clean_venv_and_serves_the_demo(tmp_path: Path) -> None:
    why = index_reachable()
    if why is not None:
        unavailable("PyPI", why)
    began = time.monotonic()
    # Nothing of this checkout may leak into what is installed or run.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    dist = tmp_path / "dist"
    built = run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("asgimon-*.whl")
    (sdist,) = dist.glob("asgimon-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert data_files() <= in_wheel
    assert "asgimon/demo/server.py" in in_wheel
    assert not [name for name in in_wheel if name.startswith(("tests/", "examples/"))]
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        in_sdist = {name.removeprefix(f"{top}/src/") for name in archive.getnames()}
    assert data_files() <= in_sdist

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=120, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(
        [str(python), "-m", "pip", "install", "--quiet", "--timeout", "60", f"{wheel}[all]"],
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    clean = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    where = run(
        [
            str(python),
            "-c",
            "import asgimon, pathlib; print(pathlib.Path(asgimon.__file__).parent)",
        ],
        timeout=60,
        env=clean,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip())
    assert package.is_relative_to(venv), package
    # Marked after installing: a page carrying the mark was rendered from these files.
    with (package / "dashboard" / "templates" / "base.html").open("a") as template:
        template.write(MARK + "\n")

    port = free_port()
    demo = subprocess.Popen(
        [str(venv / "bin" / "asgimon"), "demo", "--port", str(port), "--duration", "20"],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = read_line(demo.stdout, 60)
        assert first == f"asgimon dashboard: http://127.0.0.1:{port}/analytics/\n", first
        base = f"http://127.0.0.1:{port}/analytics"
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200, page.text[:2000]
        assert "<h1>Overview" in page.text
        assert MARK in page.text
        health = httpx.get(f"{base}/api/health", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["storage"]["ok"] is True
        script = re.search(r'<script src="([^"]*/static/asgimon\.js)"', page.text)
        assert script is not None, page.text[:2000]
        static = httpx.get(f"http://127.0.0.1:{port}{script.group(1)}", timeout=10)
        assert static.status_code == 200
        assert static.content == (package / "dashboard" / "static" / "asgimon.js").read_bytes()
        out, err = demo.communicate(timeout=60)  # it stops by itself after --duration
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, err[-3000:]
    assert "Traceback" not in out + err
    assert time.monotonic() - began < 240
