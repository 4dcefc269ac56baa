"""Why a build's git fetch failed, in the operator's words only.

The init container that fetches a git context runs git against the tenant's server, and git
copies what that server says into its stderr: ``remote:`` side-band lines, ``remote error:``
texts, the URL it was redirected to.  With ``FallbackToLogsOnError`` that stderr would be the
termination message and so the Image's condition message: any text a hostile server chose,
in the tenant's status (and in every tenant's status whose build fetches from that server).

So the message is never passed on.  It is read for a fixed vocabulary of git's own failures,
and the condition says which one it was with the operator's sentence, adding only digits
(an HTTP status, an exit code) and object ids checked to be hex.  ``remote:`` lines are not
even read.  Whatever matches nothing is "the fetch failed" with its exit code.
"""

from __future__ import annotations

import re

__all__ = ["git_fetch_failure"]

_HEX_ID = r"[0-9a-f]{40}|[0-9a-f]{64}"
# Our own script's check (GIT_SCRIPT): the only line that carries ids, checked as hex.
_WRONG_COMMIT = re.compile(rf"^fetched ({_HEX_ID}), not the resolved commit ({_HEX_ID})$")
_HTTP_STATUS = re.compile(r"\bThe requested URL returned error: ([1-5][0-9]{2})\b")
# (pattern in git's own words, what the condition says); the first that matches wins.
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), said)
    for pattern, said in (
        (r"could not read Username|terminal prompts disabled",
         "the server asks for credentials (set spec.build.context.git.secret)"),
        (r"Authentication failed", "the server refused the credentials"),
        (r"not our ref|couldn't find remote ref|no such remote ref|unadvertised object",
         "the server does not have the resolved commit any more (force-pushed away?)"),
        (r"Could not resolve host", "the git host's name does not resolve"),
        (r"Connection refused|Failed to connect", "the git host refused the connection"),
        (r"timed out", "the connection to the git host timed out"),
        (r"SSL certificate problem|server certificate verification failed|certificate",
         "the git host's TLS certificate is not trusted"),
        (r"redirect", "the server redirected the fetch; redirects are not followed"),
        (r"transport '[a-z+]*' not allowed|unsupported protocol",
         "the URL's protocol is not allowed (http, https and git only)"),
        (r"path '.*' does not exist|not a valid object name|not a tree object",
         "spec.build.context.git.path is not a directory of that commit"),
        (r"No space left on device", "the build pod ran out of disk while fetching"),
        (r"early EOF|unexpected disconnect|the remote end hung up|RPC failed",
         "the server ended the transfer early"),
    )
)  # fmt: skip


def git_fetch_failure(message: str | None, exit_code: int | None) -> str:
    """The condition message for a failed git fetch, from git's (hostile) stderr."""
    code = f" (exit code {exit_code})" if isinstance(exit_code, int) else ""
    lines = [
        line.strip()
        for line in (message or "").splitlines()
        if line.strip() and not line.lstrip().lower().startswith("remote:")
    ]
    for line in lines:
        if (wrong := _WRONG_COMMIT.fullmatch(line)) is not None:
            return (
                f"the git context could not be fetched: the server sent {wrong.group(1)}, "
                f"not the resolved commit {wrong.group(2)}{code}"
            )
    for line in lines:
        if (status := _HTTP_STATUS.search(line)) is not None:
            return (
                f"the git context could not be fetched: the server answered HTTP "
                f"{status.group(1)}{code}; the server's own words are not shown"
            )
    for pattern, said in _KNOWN:
        if any(pattern.search(line) for line in lines):
            return f"the git context could not be fetched: {said}{code}"
    return f"the git context could not be fetched{code}; the server's own words are not shown"
