"""The JSON Schemas of the API's answers: each endpoint carries its own (``Endpoint.response``).

Every object is closed (``additionalProperties: false``), so a field added to an answer
without its schema fails the schema tests.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

INT: Schema = {"type": "integer", "minimum": 0}
N: Schema = {"type": "number"}
NN: Schema = {"type": "number", "nullable": True}
OUTCOME: Schema = {"type": "string", "enum": ["success", "failure"]}
RATE: Schema = {"type": "number", "minimum": 0, "maximum": 1}
S: Schema = {"type": "string"}
SN: Schema = {"type": "string", "nullable": True}
T: Schema = {"type": "string", "format": "date-time"}
B: Schema = {"type": "boolean"}


def obj(**props: Schema) -> Schema:
    return {
        "type": "object",
        "required": list(props),
        "properties": props,
        "additionalProperties": False,
    }


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


HEADER = {
    "projectId": S,
    "start": T,
    "end": T,
    "resolution": {"type": "string", "enum": ["hour", "day"]},
}
LATENCY = {
    "count": INT,
    "errors": INT,
    "errorRate": RATE,
    "avg": NN,
    "p50": NN,
    "p95": NN,
    "p99": NN,
}
HEADLINE = {
    "totalDeployments": INT,
    "successRate": RATE,
    "avgDeploymentTime": NN,
    "avgBuildTime": NN,
    "totalBuilds": INT,
    "totalFunctionInvocations": INT,
    "functionErrorRate": RATE,
    "totalErrors": INT,
    "totalApiCalls": INT,
    "apiErrorRate": RATE,
    "avgApiLatency": NN,
    "p95ApiLatency": NN,
}
IMPACT_SIDE = obj(
    apiCalls=INT,
    avgLatency=NN,
    errorRate=RATE,
    invocations=INT,
    functionErrorRate=RATE,
    avgExecutionTime=NN,
)
DEPLOYMENT = obj(
    id=S,
    deploymentId=S,
    type=S,
    status=SN,
    durationMs=NN,
    framework=SN,
    timestamp=T,
    newErrorGroups=nullable(INT),
    impact=nullable(
        obj(
            windowSeconds=INT,
            resolution={"type": "string", "enum": ["minute", "hour"]},
            before=IMPACT_SIDE,
            after=IMPACT_SIDE,
            afterComplete=B,
            pivot=T,
        )
    ),
)
RECENT_DEPLOYMENT = obj(
    id=S, deploymentId=S, type=S, status=SN, durationMs=NN, framework=SN, timestamp=T
)
TN: Schema = {**T, "nullable": True}
GROUP_STATUS: Schema = {"type": "string", "enum": ["unresolved", "resolved", "ignored"]}
GROUP = obj(
    fingerprint=S,
    type=S,
    severity=S,
    count=INT,
    firstSeen=T,
    lastSeen=T,
    message=SN,
    status=GROUP_STATUS,
    regressed=B,
    regressions=INT,
    previousCount=INT,
    spike=B,
    totalCount=INT,
    firstRelease=SN,
    lastRelease=SN,
    resolvedAt=TN,
    ignoreUntil=TN,
    ignoreCount=nullable(INT),
)
GROUP_STATE = obj(
    projectId=S,
    fingerprint=S,
    errorType=S,
    message=S,
    severity=S,
    status=GROUP_STATUS,
    firstSeen=T,
    lastSeen=T,
    count=INT,
    firstRelease=SN,
    lastRelease=SN,
    resolvedAt=TN,
    ignoreUntil=TN,
    ignoreCount=nullable(INT),
    ignoredSeen=INT,
    regressions=INT,
    regressedAt=TN,
    changedAt=TN,
    changedBy=SN,
    version=INT,
)
OCCURRENCE = {
    "id": S,
    "timestamp": T,
    "message": S,
    "severity": S,
    "handled": B,
    "endpoint": SN,
    "method": SN,
    "userId": SN,
}
FRAME: Schema = {
    "type": "object",
    "required": ["module", "function", "filename", "lineno", "inApp", "line"],
    "properties": {
        "module": S,
        "function": S,
        "filename": S,
        "lineno": INT,
        "inApp": B,
        "line": S,
        "vars": {"type": "object", "additionalProperties": S},
    },
    "additionalProperties": False,
}
EXCEPTION_LINK = obj(type=S, value=S, frames=arr(FRAME))
FUNCTION_FIGURES = {
    "invocations": INT,
    "errors": INT,
    "errorRate": RATE,
    "avgExecutionTime": NN,
    "p50ExecutionTime": NN,
    "p95ExecutionTime": NN,
    "p99ExecutionTime": NN,
}
SHARE = {"count": INT, "share": RATE}

RESPONSES: dict[str, Schema] = {
    "dashboard": obj(
        **HEADER,
        **HEADLINE,
        recentDeployments=arr(RECENT_DEPLOYMENT),
        topErrors=arr(GROUP),
        deploymentTrend=arr(obj(time=T, count=INT, failures=INT)),
    ),
    "deployments": obj(
        **HEADER,
        totalDeployments=INT,
        successRate=RATE,
        failureRate=RATE,
        avgDuration=NN,
        p50Duration=NN,
        p95Duration=NN,
        p99Duration=NN,
        deploymentsByDate=arr(obj(date={"type": "string", "format": "date"}, count=INT)),
        deploymentsByStatus=arr(
            obj(status={"type": "string", "enum": ["success", "failure"]}, count=INT)
        ),
        frameworkDistribution=arr(obj(framework=S, **SHARE)),
        deploymentTrend=arr(obj(time=T, count=INT, failures=INT, avgDuration=NN)),
        deployments=arr(DEPLOYMENT),
    ),
    "functions": obj(
        **HEADER,
        totalInvocations=INT,
        invocationRate=N,
        avgExecutionTime=NN,
        p50ExecutionTime=NN,
        p95ExecutionTime=NN,
        p99ExecutionTime=NN,
        errorRate=RATE,
        invocationsByFunction=arr(obj(functionId=S, count=INT)),
        errorsByFunction=arr(obj(functionId=S, count=INT)),
        executionTimeDistribution=arr(obj(fromMs=N, toMs=NN, count=INT)),
        invocationTrend=arr(obj(time=T, invocations=INT, errors=INT, avgExecutionTime=NN)),
        functions=arr(obj(functionId=S, **FUNCTION_FIGURES)),
    ),
    "builds": obj(
        **HEADER,
        totalBuilds=INT,
        successRate=RATE,
        failureRate=RATE,
        avgDuration=NN,
        durationTrend=arr(obj(time=T, builds=INT, failures=INT, avgDuration=NN)),
        phaseDurations=arr(
            obj(phase=S, count=INT, failures=INT, avgDuration=NN, p50Duration=NN, p95Duration=NN)
        ),
        frameworkUsage=arr(obj(framework=S, **SHARE)),
        builds=arr(
            obj(
                deploymentId=S,
                framework=SN,
                status={"type": "string", "enum": ["success", "failure"]},
                startTime=T,
                endTime=T,
                durationMs=N,
                assetCount=nullable(INT),
                totalSizeBytes=nullable(INT),
                phases=arr(obj(phase=S, status=S, durationMs=N)),
            )
        ),
    ),
    "errors": obj(
        **HEADER,
        totalErrors=INT,
        errorsByType=arr(obj(type=S, count=INT)),
        errorsBySeverity=arr(obj(severity=S, count=INT)),
        errorTrend=arr(obj(time=T, count=INT)),
        exact=B,
        recentErrors=arr(
            obj(
                id=S,
                fingerprint=S,
                type=S,
                message=S,
                severity=S,
                handled=B,
                endpoint=SN,
                method=SN,
                deploymentId=SN,
                userId=SN,
                timestamp=T,
            )
        ),
        groups=arr(GROUP),
    ),
    "performance": obj(
        **HEADER,
        apdexThresholdMs=N,
        requests=INT,
        errorRate=RATE,
        avgLatency=NN,
        p50Latency=NN,
        p95Latency=NN,
        p99Latency=NN,
        apdex=nullable(RATE),
        latencyTrend=arr(obj(time=T, count=INT, errors=INT, avg=NN, p95=NN)),
        endpoints=arr(obj(endpoint=S, method=S, **LATENCY, apdex=nullable(RATE))),
        # Per sampled process ({host}/{pid}): memory in MB, CPU in % of one core.
        system=arr(
            obj(
                process=S,
                memoryAvgMb=NN,
                memoryMaxMb=NN,
                cpuAvgPercent=NN,
                cpuMaxPercent=NN,
            )
        ),
        # Per endpoint and normalised statement, from the query-timing plugins: the slowest
        # by total time and the most frequent by executions. The text and database are null
        # once no raw event of the statement is left in the range.
        queries=arr(
            obj(
                endpoint=S,
                method=S,
                statementHash=S,
                statement=SN,
                database=SN,
                calls=INT,
                requests=INT,
                totalMs=N,
                avgMs=N,
                maxRequestMs=NN,
                nPlusOneRequests=INT,
            )
        ),
    ),
    "ratelimits": obj(
        **HEADER,
        totalDenied=INT,
        totalShadowDenied=INT,
        throttledKeys=INT,
        byRule=arr(obj(rule=S, denied=INT, shadowDenied=INT)),
        topKeys=arr(obj(key=S, denied=INT, shadowDenied=INT, rules=arr(S), lastAt=T)),
        topEndpoints=arr(obj(method=S, path=S, denied=INT, shadowDenied=INT, keys=INT)),
        denialTrend=arr(obj(time=T, denied=INT, shadowDenied=INT)),
        recentDenials=arr(
            obj(
                time=T,
                lastAt=T,
                key=S,
                rule=S,
                method=S,
                path=S,
                limit=INT,
                windowS=INT,
                count=INT,
                shadow=B,
            )
        ),
        sampled=B,
    ),
    "events": obj(
        **HEADER,
        kind=S,
        events=arr({"type": "object", "required": ["kind", "id", "projectId", "timestamp"]}),
    ),
}

OVERVIEW_ANSWER = obj(
    start=T,
    end=T,
    resolution={"type": "string", "enum": ["hour", "day"]},
    totalProjects=INT,
    projects=arr(obj(projectId=S, **HEADLINE)),
)

ERROR = obj(
    error=obj(
        code=S,
        message=S,
        details=arr({"type": "object", "properties": {"field": S, "message": S}}),
    )
)

GROUP_DETAIL = obj(
    **HEADER,
    fingerprint=S,
    type=S,
    message=S,
    severity=S,
    status=GROUP_STATUS,
    regressed=B,
    regressions=INT,
    count=INT,
    previousCount=INT,
    spike=B,
    totalCount=INT,
    firstSeen=TN,
    lastSeen=TN,
    firstRelease=SN,
    lastRelease=SN,
    resolvedAt=TN,
    ignoreUntil=TN,
    ignoreCount=nullable(INT),
    ignoredSeen=INT,
    changedAt=TN,
    changedBy=SN,
    trend=arr(obj(time=T, count=INT)),
    usersAffected=INT,
    endpoints=arr(obj(method=SN, endpoint=S, count=INT)),
    deployments=arr(obj(deploymentId=SN, count=INT)),
    latest={"type": "object", "nullable": True, "required": ["kind", "id", "stack"]},
    exception=arr(EXCEPTION_LINK),
    occurrences=arr(obj(**OCCURRENCE, requestId=SN, deploymentId=SN)),
    exact=B,
)
IGNORE_BODY: Schema = {
    "type": "object",
    "properties": {
        "until": {**T, "description": "ignored until this instant (in the future)"},
        "count": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1_000_000_000,
            "description": "ignored for this many more occurrences",
        },
    },
    "additionalProperties": False,
}
EMPTY_BODY: Schema = {"type": "object", "properties": {}, "additionalProperties": False}
SUBJECT: Schema = {
    **S,
    "description": "a key: user:ID, sub:JWT_SUBJECT, key:API_KEY or addr:IP",
    "maxLength": 400,
}
SUBJECT_BODY: Schema = {
    "type": "object",
    "required": ["subject"],
    "properties": {"subject": SUBJECT},
    "additionalProperties": False,
}
OVERRIDE_BODY: Schema = {
    "type": "object",
    "required": ["subject", "rate"],
    "properties": {
        "subject": SUBJECT,
        "rate": {**S, "description": "a rate such as 1000/minute (several separated by ,)"},
        "note": {**S, "maxLength": 500},
        "expiresAt": {**N, "nullable": True, "description": "epoch seconds; null for never"},
    },
    "additionalProperties": False,
}

INGEST_ANSWER = obj(accepted=INT, duplicates=INT)
INGEST_BODY: Schema = obj(events=arr({"oneOf": []}))
"""Filled with a reference per kind clients may post, when the document is assembled."""
