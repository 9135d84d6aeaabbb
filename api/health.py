"""Liveness, readiness and metrics endpoints, for the API and for a worker's metrics port.

- `GET /healthz`: the process answers (liveness; cheap, checks nothing else).
- `GET /readyz`: each check of what this process depends on (the log and the store reachable, its roles alive,
  the projector's lag under a bound), run at once, each within a timeout: 200 with the checks when all pass, else a
  503 problem+json that lists the failed ones (`failedChecks`) and every check's result (`checks`).
- `GET /metrics`: every metric of the process in Prometheus' text format.

The checks are built by the composition root (`turnlog/readiness.py`) and handed in: on the API through its
context, on a worker through `health_app`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.problems import PROBLEM_TYPE_BASE, ProblemKind, render_problem
from kernel.metrics import exposition

NOT_READY = ProblemKind(status=503, type=PROBLEM_TYPE_BASE + "not-ready", title="Not ready")


@dataclass(frozen=True, kw_only=True)
class Check:
    """One thing the process depends on: `probe` returns None when it is fine, or what is wrong, or raises."""

    name: str
    probe: Callable[[], Awaitable[str | None]]
    timeout_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    duration_ms: float

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "durationMs": round(self.duration_ms, 1)}


class Readiness:
    """The checks of one process, run together."""

    def __init__(self, checks: Sequence[Check] = ()) -> None:
        self._checks = list(checks)

    def add(self, check: Check) -> None:
        self._checks.append(check)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(check.name for check in self._checks)

    async def run(self) -> list[CheckResult]:
        return list(await asyncio.gather(*(_run(check) for check in self._checks)))


async def _run(check: Check) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout_s):
            problem = await check.probe()
    except TimeoutError:
        problem = f"no answer within {check.timeout_s:g} s"
    except Exception as error:  # a check that raises has found its problem
        problem = f"{type(error).__name__}: {error}"
    duration_ms = (time.perf_counter() - started) * 1000
    return CheckResult(name=check.name, ok=problem is None, detail=problem or "ok", duration_ms=duration_ms)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    readiness = readiness_of(request)
    if readiness is None:  # the system behind the API has not started (or has no checks)
        return render_problem(kind=NOT_READY, detail="the process is still starting", instance=request.url.path)
    results = await readiness.run()
    failed = [result.name for result in results if not result.ok]
    checks = [result.as_json() for result in results]
    if failed:
        reasons = "; ".join(f"{result.name}: {result.detail}" for result in results if not result.ok)
        return render_problem(
            kind=NOT_READY, detail=f"not ready: {reasons}", instance=request.url.path,
            extension_members={"failedChecks": failed, "checks": checks},
        )
    return JSONResponse({"status": "ready", "checks": checks})


async def metrics(request: Request) -> Response:
    body, media_type = exposition()
    return Response(body, media_type=media_type)


def readiness_of(request: Request) -> Readiness | None:
    """The API's readiness from its context; a worker's health app keeps it on its own state."""
    state = request.app.state
    readiness = getattr(state, "readiness", None)
    if readiness is not None:
        return readiness
    context = getattr(state, "context", None)
    return getattr(context, "readiness", None)


ROUTES = [
    Route("/healthz", health, methods=["GET"]),
    Route("/readyz", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]


def health_app(readiness: Readiness) -> Starlette:
    """A worker's metrics port: `/healthz`, `/readyz` (its checks) and `/metrics`."""
    app = Starlette(routes=ROUTES)
    app.state.readiness = readiness
    return app
