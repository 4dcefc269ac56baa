"""An ApiException's body -> the API's reason and message, and the condition it becomes."""

from __future__ import annotations

import json

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.domain.api_failures import ApiFailure, failure_verdicts
from lamina.kube.client import api_failure, describe_error


def api_exception(code: int, reason: str, message: str, **details: str) -> ApiException:
    error = ApiException(status=code, reason="HTTP reason phrase")
    error.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }
    ).encode()
    return error


MISSING = api_exception(
    404, "NotFound", 'namespaces "lamina-system" not found', kind="namespaces", name="lamina-system"
)


def test_the_body_reason_and_message_are_what_a_log_line_says() -> None:
    failure = api_failure(MISSING)
    assert failure == ApiFailure(
        404, "NotFound", 'namespaces "lamina-system" not found', "namespaces", "lamina-system"
    )
    assert describe_error(MISSING) == '404 NotFound: namespaces "lamina-system" not found'
    assert "ApiException" not in describe_error(MISSING)


def test_a_body_that_is_not_a_status_still_gives_the_http_answer() -> None:
    error = ApiException(status=502, reason="Bad Gateway")
    error.body = "<html>proxy error</html>"
    assert describe_error(error) == "502 Bad Gateway: <html>proxy error</html>"
    bare = ApiException(status=500, reason="Internal Server Error")
    assert describe_error(bare) == "500 Internal Server Error"


def test_connection_errors_are_api_failures_and_bugs_are_not() -> None:
    refused = api_failure(aiohttp.ClientConnectionError("Cannot connect to host 10.0.0.1:6443"))
    assert refused is not None and refused.code == 0 and refused.transient
    assert api_failure(KeyError("spec")) is None
    assert describe_error(KeyError("spec")) == "KeyError: 'spec'"


@pytest.mark.parametrize(
    ("failure", "reason", "stalled", "fragment"),
    [
        (
            api_failure(MISSING),
            "NamespaceNotFound",
            True,
            'namespace "lamina-system" does not exist',
        ),
        (
            ApiFailure(403, "Forbidden", 'jobs.batch is forbidden: User "x" cannot create'),
            "Forbidden",
            True,
            "not allowed",
        ),
        (
            ApiFailure(422, "Invalid", 'Job.batch "x" is invalid: spec.template'),
            "Refused",
            True,
            "refused it",
        ),
        (
            ApiFailure(400, "BadRequest", "violates PodSecurity restricted"),
            "Refused",
            True,
            "PodSecurity",
        ),
        (ApiFailure(503, "ServiceUnavailable", "etcd down"), "ApiUnavailable", False, "retrying"),
        (ApiFailure(0, "Unreachable", "connection refused"), "ApiUnavailable", False, "retrying"),
        (ApiFailure(429, "TooManyRequests", "slow down"), "ApiUnavailable", False, "slow down"),
    ],
)
def test_a_failure_becomes_a_condition_naming_the_step_and_the_apis_words(
    failure: ApiFailure | None, reason: str, stalled: bool, fragment: str
) -> None:
    assert failure is not None
    ready, reconciling, stall = failure_verdicts("create the commit Job lamina-system/c-1", failure)
    assert ready.status == "False"
    assert (stall.status == "True") is stalled
    assert (reconciling.status == "True") is not stalled
    assert ready.reason == reason
    assert "create the commit Job lamina-system/c-1" in ready.message
    assert fragment in ready.message
    assert failure.message[:40] in ready.message
