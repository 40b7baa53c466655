"""asgimon as an ``--extra`` variant of the shared peer harness (``peerbench.py``).

    PYTHONPATH=path/to/asgimon/benchmarks .venv/bin/python peerbench.py --mode ab \\
        --extra asgimon=asgimon_bench:wrap --md results/ab_asgimon.md

``wrap(app)`` returns the bare Starlette app behind asgimon's middleware on a MemoryStorage;
the harness drives the lifespan, which starts the monitor and its flush task, and shuts it
down (draining the queue) before it reads ``peerbench_probe``.

The probe reports the recorder's ledger and how many batches it wrote. peerbench's driver
never returns to the event loop between requests, so the flush task runs only when
something else yields: in ``--mode inproc`` that is shutdown (one queue of
every request), in ``--mode ab`` it is also the BaseHTTPMiddleware-based variants (anyio
streams), which then pay for asgimon's conversion. Either way asgimon's own row times its
request path; ``benchmarks/overhead.py`` times the flush too.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from asgimon import AsgimonMiddleware, MemoryStorage, Monitor


class ProbedMiddleware(AsgimonMiddleware):
    """asgimon's middleware plus the optional attribute peerbench reads after the run."""

    peerbench_probe: Callable[[], str]


def wrap(app: ASGIApp) -> ASGIApp:
    monitor = Monitor(storage=MemoryStorage(), flush_interval=1.0)

    def probe() -> str:
        s = monitor.stats()
        return (
            f"recorded={s.recorded} written={s.written} dropped={s.dropped_total} "
            f"pending={s.pending} batches={s.batches}"
        )

    wrapped = ProbedMiddleware(app, monitor=monitor)
    wrapped.peerbench_probe = probe
    return wrapped
