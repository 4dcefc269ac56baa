"""One way to report a failed reconcile: a log line with the API's words, and a metric.

``f"{error!r}"`` of a kubernetes_asyncio ``ApiException`` prints ``ApiException()`` or a wall
of headers; what names the problem is the body's ``reason`` and ``message``.  Every loop of the
operator reports its failures through :func:`report_failure`, so the log line and
``lamina_reconcile_errors_total{handler, reason}`` always agree.
"""

from __future__ import annotations

from typing import Any

from lamina.domain.api_failures import ApiFailure
from lamina.handlers.metrics import RECONCILE_ERRORS
from lamina.kube.client import api_failure, describe_error


def report_failure(handler: str, what: str, error: BaseException, logger: Any) -> ApiFailure | None:
    """Log and count one failure of ``handler`` doing ``what``; the API's answer, if any.

    ``logger`` is kopf's per-object logger or any ``logging.Logger``.
    """
    failure = api_failure(error)
    reason = failure.reason if failure is not None else type(error).__name__
    RECONCILE_ERRORS.labels(handler, reason).inc()
    logger.warning(f"{what} failed: {describe_error(error)}")
    return failure
