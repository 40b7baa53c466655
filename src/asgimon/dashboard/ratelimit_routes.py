"""The host rate limit's administration, for admins only:

    GET    /api/admin/ratelimits/limits                      the configured limits
    GET    /api/admin/ratelimits/usage?subject=user:alice    where a key stands now
    POST   /api/admin/ratelimits/reset      {"subject": …}   forget what a key spent
    GET    /api/admin/ratelimits/overrides                   the per-key limits in force
    PUT    /api/admin/ratelimits/overrides  {"subject", "rate", "note"?, "expiresAt"?}
    DELETE /api/admin/ratelimits/overrides?subject=user:alice

A subject is a key as the limiter makes it: ``user:ID``, ``sub:JWT_SUBJECT``, ``key:API_KEY``
or ``addr:IP``. Overrides are stored, so every worker applies them (within a second).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon.analytics.common import instant
from asgimon.ratelimit.host import HostLimits
from asgimon.ratelimit.overrides import Override
from asgimon.ratelimit.policy import Rule

from .alert_answers import guarded
from .guard import principal_of
from .params import check_params, json_body
from .responses import error_response
from .wire import to_wire

ADMIN_PATH = "/api/admin/ratelimits"


def _admins_only() -> JSONResponse:
    return error_response(
        403,
        "forbidden",
        "only an admin may administer the rate limit",
        [{"field": "principal", "message": "not an admin"}],
    )


def _limiter_unavailable() -> JSONResponse:
    return error_response(
        503,
        "rate_limiter_unavailable",
        "the rate limiter's counters are unavailable; retry later",
        headers={"Retry-After": "5"},
    )


def rule_figures(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "limits": [{"limit": i.amount, "window_s": i.get_expiry()} for i in rule.items],
    }


def override_figures(o: Override) -> dict[str, Any]:
    return {
        "subject": o.subject,
        "key": o.key,
        "rate": o.rate,
        "note": o.note,
        "created_at": instant(o.created_at),
        "created_by": o.created_by,
        "expires_at": None if o.expires_at is None else instant(o.expires_at),
    }


def limits_figures(limits: HostLimits) -> dict[str, Any]:
    s = limits.settings
    return {
        "enabled": limits.enabled,
        "shadow": s.rate_limit_shadow,
        "strategy": s.rate_limit_strategy,
        "headers": s.rate_limit_headers,
        "storage": "redis" if limits.redis_url else "memory",
        "burst": s.rate_limit_burst,
        "default": rule_figures(limits.policy.default),
        "endpoints": [
            {"method": e.method, "template": e.template, **rule_figures(e.rule)}
            for e in limits.policy.endpoints
        ],
        "exempt": list(s.rate_limit_exempt),
        "fail_closed": list(s.rate_limit_fail_closed),
        "keys_hashed": s.rate_limit_hash_keys,
    }


Handler = Callable[[Request], Awaitable[Response]]


def _for_admins(handler: Handler) -> Handler:
    """Admins only; a bad field is a 422 naming it, storage down a 503."""

    answered = guarded(handler)

    async def admins_only(request: Request) -> Response:
        if not principal_of(request).admin:
            return _admins_only()
        return await answered(request)

    return admins_only


class RateLimitsApi:
    def __init__(self, limits: HostLimits) -> None:
        self.limits = limits
        self.limits_config = _for_admins(self._limits_config)
        self.usage = _for_admins(self._usage)
        self.reset = _for_admins(self._reset)
        self.overrides = _for_admins(self._overrides)
        self.set_override = _for_admins(self._set_override)
        self.remove_override = _for_admins(self._remove_override)

    async def _limits_config(self, request: Request) -> Response:
        check_params(request.query_params, set())
        return JSONResponse(to_wire(limits_figures(self.limits)))

    async def _usage(self, request: Request) -> Response:
        check_params(request.query_params, {"subject"})
        subject = request.query_params.get("subject")
        found = await self.limits.usage(subject)
        if found is None:
            return _limiter_unavailable()
        rules = [
            {
                "name": u.rule.name,
                "limits": [
                    {
                        "limit": v.limit,
                        "window_s": v.window_s,
                        "remaining": v.remaining,
                        "used": v.limit - v.remaining,
                        "reset_s": v.reset_s,
                    }
                    for v in u.standing
                ],
            }
            for u in found
        ]
        key = self.limits.key(str(subject))
        return JSONResponse(to_wire({"subject": subject, "key": key, "rules": rules}))

    async def _reset(self, request: Request) -> Response:
        check_params(request.query_params, set())
        body = await json_body(request, frozenset({"subject"}))
        if not await self.limits.reset(body.get("subject")):
            return _limiter_unavailable()
        return JSONResponse({"subject": body["subject"].strip(), "reset": True})

    async def _overrides(self, request: Request) -> Response:
        check_params(request.query_params, set())
        listed = [override_figures(o) for o in self.limits.overrides()]
        return JSONResponse(to_wire({"overrides": listed}))

    async def _set_override(self, request: Request) -> Response:
        check_params(request.query_params, set())
        body = await json_body(request, frozenset({"subject", "rate", "note", "expiresAt"}))
        override = await self.limits.set_override(
            body.get("subject"),
            body.get("rate"),
            note=body.get("note", ""),
            expires_at=body.get("expiresAt"),  # NaN and infinity fail its range check
            by=principal_of(request).subject,
        )
        return JSONResponse(to_wire(override_figures(override)))

    async def _remove_override(self, request: Request) -> Response:
        check_params(request.query_params, {"subject"})
        if not await self.limits.remove_override(request.query_params.get("subject")):
            return error_response(
                404,
                "not_found",
                "no override for this subject",
                [{"field": "subject", "message": "holds no override"}],
            )
        return JSONResponse({"removed": True})
