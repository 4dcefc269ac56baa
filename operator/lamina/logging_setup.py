"""How the operator logs: kopf's text lines, or one JSON object per line.

JSON (``--log-format=json`` or ``LAMINA_LOG_FORMAT=json``) is for log collectors: each line
is one object with ``timestamp``, ``severity``, ``logger`` and ``message``, plus ``object``
(``{apiVersion, kind, name, uid, namespace}``) for lines about one object and ``exc_info``
for a traceback, so a multi-line traceback never splits a record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

LOG_FORMATS = ("text", "json")
ENV = "LAMINA_LOG_FORMAT"


def chosen_format(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The flag, else ``$LAMINA_LOG_FORMAT``, else text; anything else is refused."""
    source = os.environ if env is None else env
    chosen = (flag or source.get(ENV) or "text").strip().lower()
    if chosen not in LOG_FORMATS:
        raise SystemExit(
            f"unknown log format {chosen!r} (from --log-format or ${ENV}): "
            f"use one of {', '.join(LOG_FORMATS)}"
        )
    return chosen


def json_formatter() -> logging.Formatter:
    """kopf's JSON formatter (python-json-logger), with the logger name and object ref."""
    from kopf._core.actions.loggers import ObjectJsonFormatter  # noqa: PLC0415

    return ObjectJsonFormatter(
        "%(name)s %(message)s",
        rename_fields={"name": "logger"},
        refkey="object",
    )


def configure_logging(*, verbose: bool, log_format: str | None = None) -> None:
    """Configure the root logger for ``lamina operator`` (called before kopf starts)."""
    import kopf  # noqa: PLC0415 - only the operator pays for kopf

    chosen = chosen_format(log_format)
    kopf.configure(verbose=verbose, log_prefix=True)
    if chosen == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(json_formatter())
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
