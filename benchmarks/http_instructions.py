"""What each variant of ``http_load.py`` costs the server over real HTTP, in CPU instructions
a request: a figure the machine's noise does not move.

    .venv/bin/python benchmarks/http_instructions.py                   # 4 variants, ~5 min
    .venv/bin/python benchmarks/http_instructions.py --variants bare,asgimon-memory-limit
    .venv/bin/python benchmarks/http_instructions.py --md out.md --json out.json

On a shared 2-core machine wrk's requests per second move by 40 % from one minute to the
next (neighbours, frequency), and a ratio between two variants measured a minute apart moves
with them. Instructions do not: ``valgrind --tool=callgrind`` counts every instruction the
server process runs, the same for the same program and inputs whatever else the machine
does. Each variant is served as ``http_load.py`` serves it (``http_load.py _serve``: uvicorn,
uvloop, httptools, one worker, the same app) but under callgrind, with ``PYTHONHASHSEED=0``.
Once it answers, ``--warmup`` s of wrk, then callgrind's counters are zeroed, wrk runs for
``--duration`` s, the counters are dumped, and the instructions counted are divided by the
requests wrk completed, less what the server runs in as long a time idle (measured right
after): its timers and ticks run by the clock, and at the 50th of the requests a second
that callgrind leaves they would weigh 50 times what they do at full speed. The count
includes everything else the server did in that window:
uvicorn's parsing and writing, the app, asgimon's request path and its background work
(the writer, the rollups, the store), the garbage collector.

``ratio vs bare`` is bare's instructions a request over the variant's: the share of the bare
app's throughput the variant keeps where every instruction takes as long as any other. It
leaves out what the count cannot see (cache misses, system calls' time, waiting), so it
sits above wrk's ratio on a quiet machine; read both. Runs ``--jobs`` servers at once
(each one core; wrk is idle most of the time, the server under callgrind being about 50x
slower).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from http_load import BASELINE, SCRIPT, VARIANTS, WRK_LUA, free_port, http_get, parse_wrk

DEFAULT_VARIANTS = ("bare", "asgimon-memory", "asgimon-memory-limit", "asgimon-sqlite-limit")
READY_S = 300.0  # start-up under callgrind takes a minute or more


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wait_answering(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        with contextlib.suppress(OSError):
            if http_get(port, "/health", timeout=10)[0] == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"no answer on port {port} within {READY_S:g} s")


def wrk(port: int, seconds: float, lua: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "-s", str(lua), f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def counted(dump: Path) -> int:
    """The instructions in a callgrind dump (its ``summary:`` or ``totals:`` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary line")


def measure(variant: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    port = free_port()
    out = work / f"{variant}.callgrind"
    lua = work / "items.lua"
    lua.write_text(WRK_LUA)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    serve = [sys.executable, SCRIPT, "_serve", "--variant", variant, "--port", str(port)]
    serve += ["--sqlite", str(work / f"{variant}.db")]
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *serve],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_answering(port, proc)
        wrk(port, args.warmup, lua)
        zero_at = counting(proc.pid)
        run = wrk(port, args.duration, lua)
        loaded = dumped(proc.pid, work, variant, zero_at)
        # The same time idle: what the server runs by the clock, not by the request (timers,
        # the lag probe, flush ticks), which 50x fewer requests a second would inflate.
        zero_at = counting(proc.pid)
        time.sleep(args.duration)
        idle = dumped(proc.pid, work, variant, zero_at)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    requests = run["requests"]
    per = (loaded[0] - idle[0] * loaded[1] / idle[1]) / requests
    log(f"{variant:24s} {requests:6d} requests  {per:10,.0f} instr/request")
    return {
        "variant": variant,
        "requests": requests,
        "errors": run["errors"],
        "instructions": loaded[0],
        "seconds": loaded[1],
        "idle_per_s": idle[0] / idle[1],
        "per_request": per,
    }


def counting(pid: int) -> float:
    """Callgrind's counters zeroed: the moment, to know how long they counted."""
    subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)
    return time.monotonic()


def dumped(pid: int, work: Path, variant: str, since: float) -> tuple[int, float]:
    """The instructions counted since the counters were zeroed, and over how many seconds."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    seconds = time.monotonic() - since
    dumps = sorted(work.glob(f"{variant}.callgrind.{pid}*"), key=os.path.getmtime)
    return counted(dumps[-1]), seconds


def render_md(results: list[dict[str, Any]]) -> str:
    base = next((r["per_request"] for r in results if r["variant"] == BASELINE), None)
    lines = [
        "| variant | requests | instructions a request | vs bare | ratio vs bare "
        "| idle, a second | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per = r["per_request"]
        delta = "—" if base is None or r["variant"] == BASELINE else f"{per - base:+,.0f}"
        ratio = "—" if base is None else f"{base / per:.3f}x"
        lines.append(
            f"| {r['variant']} | {r['requests']:,} | {per:,.0f} | {delta} | {ratio} "
            f"| {r['idle_per_s']:,.0f} | {r['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {VARIANTS}")
    ap.add_argument("--warmup", type=float, default=10.0, help="s of wrk before counting")
    ap.add_argument("--duration", type=float, default=30.0, help="s of wrk counted")
    ap.add_argument("--jobs", type=int, default=2, help="servers measured at once")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not 1 <= args.jobs <= 8:
        raise SystemExit("--jobs: 1 to 8")
    with (
        tempfile.TemporaryDirectory(prefix="asgimon-instr-") as tmp,
        ThreadPoolExecutor(args.jobs) as pool,
    ):
        results = list(pool.map(lambda v: measure(v, args, Path(tmp)), names))
    table = render_md(results)
    print(table)
    if args.md:
        args.md.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
