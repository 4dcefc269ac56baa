"""``--log-format=json``: one JSON object per line, with the object a line is about."""

from __future__ import annotations

import io
import json
import logging

import pytest

from lamina.cli.main import build_parser, program_name
from lamina.logging_setup import chosen_format, json_formatter


def test_the_flag_wins_over_the_environment_and_text_is_the_default() -> None:
    assert chosen_format(None, {}) == "text"
    assert chosen_format(None, {"LAMINA_LOG_FORMAT": "JSON"}) == "json"
    assert chosen_format("text", {"LAMINA_LOG_FORMAT": "json"}) == "text"
    with pytest.raises(SystemExit, match="unknown log format 'yaml'"):
        chosen_format(None, {"LAMINA_LOG_FORMAT": "yaml"})


def test_the_operator_command_takes_the_flag() -> None:
    args = build_parser().parse_args(["operator", "--log-format", "json"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--log-format", "xml"])


def test_each_record_is_one_json_line_with_level_logger_object_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    log = logging.getLogger("lamina.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        ref = {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "name": "app",
            "uid": "u1",
            "namespace": "demo",
        }
        log.warning("build failed: %s", "PushDenied", extra={"k8s_ref": ref})
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("resync failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "build failed: PushDenied"
    assert first["severity"] == "warn"
    assert first["logger"] == "lamina.test.json"
    assert first["object"] == ref
    assert "timestamp" in first
    assert second["severity"] == "error"
    assert "ValueError: line one\nline two" in second["exc_info"]


def test_kubectl_plugin_name() -> None:
    assert program_name("/usr/local/bin/kubectl-lamina") == "kubectl lamina"
    assert program_name("/venv/bin/lamina") == "lamina"
