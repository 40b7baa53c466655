"""``/checkout``: a plan paid through an outside payment provider, which now and then times out."""

from __future__ import annotations

import asyncio
import random

from fastapi import APIRouter, HTTPException, status

from examples.fastapi_app.deps import ServicesDep, UserDep
from examples.fastapi_app.schemas import CheckoutIn

router = APIRouter(tags=["billing"])


async def _charge(plan: str) -> str:
    # Stands in for the provider's API: slow, and now and then no answer at all.
    await asyncio.sleep(random.lognormvariate(-3.5, 0.5))
    if random.random() < 0.05:
        raise TimeoutError("payment provider timed out")
    return f"ch_{random.getrandbits(48):012x}"


@router.post("/checkout")
async def checkout(
    user: UserDep, services: ServicesDep, body: CheckoutIn | None = None
) -> dict[str, str]:
    plan = "pro" if body is None else body.plan
    try:
        charge = await _charge(plan)
    except TimeoutError as exc:
        # Handled (the caller is told to retry), so reported by hand, with what it concerned.
        services.monitor.capture_exception(
            exc, severity="high", context={"provider": "acme-pay", "plan": plan}
        )
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "payment provider unavailable"
        ) from exc
    return {"status": "paid", "plan": plan, "charge": charge}
