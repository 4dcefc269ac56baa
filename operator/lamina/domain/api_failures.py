"""An API request the server refused or failed, as a condition users can act on.

The Kubernetes API answers a refusal with a ``Status`` object: a code, a CamelCase reason
(``NotFound``, ``Forbidden``, ``Invalid``) and a message naming what is wrong.  Those words,
not the client's exception class, are what a user needs to see on the object that is stuck
and in the log line.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.domain.conditions import Verdict, kstatus

NAMESPACE_NOT_FOUND = "NamespaceNotFound"
FORBIDDEN = "Forbidden"
REFUSED = "Refused"
API_UNAVAILABLE = "ApiUnavailable"

_MESSAGE_LIMIT = 600


@dataclass(frozen=True)
class ApiFailure:
    """What the API server said (``code`` 0: no answer at all, e.g. a refused connection)."""

    code: int
    reason: str
    message: str
    kind: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        head = f"{self.code} {self.reason}" if self.code else self.reason
        return f"{head}: {self.message}" if self.message else head

    @property
    def transient(self) -> bool:
        """Worth retrying as is: the server (or the way to it) failed, not the request."""
        return self.code in {0, 429} or self.code >= 500


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def failure_verdicts(action: str, failure: ApiFailure) -> tuple[Verdict, ...]:
    """kstatus for an object whose next step (``action``, e.g. "create the commit Job
    lamina-system/x") the API refused.

    A refusal needs a person (create the namespace, grant the role, relax the admission
    policy), so it is Stalled; the operator still retries with a back-off, so the object
    recovers by itself once that is done.  A failure of the server itself is Reconciling.
    """
    said = _cut(str(failure))
    if failure.transient:
        reason, progressing = API_UNAVAILABLE, True
        message = f"could not {action}, retrying: {said}"
    elif failure.code == 404 and failure.kind == "namespaces":
        reason, progressing = NAMESPACE_NOT_FOUND, False
        message = (
            f'could not {action}: namespace "{failure.name}" does not exist '
            f"(create it, or point LAMINA_NAMESPACE at the operator's namespace): {said}"
        )
    elif failure.code in (401, 403):
        reason, progressing = FORBIDDEN, False
        message = f"could not {action}: the operator is not allowed to: {said}"
    else:
        reason, progressing = REFUSED, False
        message = f"could not {action}: the API server refused it: {said}"
    return kstatus(ready=False, progressing=progressing, reason=reason, message=message)
