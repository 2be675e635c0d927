"""structlog: JSON lines in a DaemonSet (one object per line for log shippers),
readable key=value lines on a terminal. Every value is redacted before it is
rendered (an error may quote a config line or an endpoint URL with a
password in it)."""
from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from cri_exporter.redact import REDACTED, is_secret_key, redact_data, redact_text


def redact_event(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: secrets out of every field, exceptions included."""
    for key, value in event.items():
        if is_secret_key(key) and value not in (None, ""):
            event[key] = REDACTED
        elif isinstance(value, (str, list, tuple, dict)):
            event[key] = redact_data(value)
        elif not isinstance(value, (int, float, bool, type(None))):
            event[key] = redact_text(str(value))
    return event


def configure(log_format: str = "auto", level: str = "info") -> None:
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    processors: list[Processor] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                  structlog.processors.format_exc_info, redact_event]
    if log_format == "json":
        processors += [structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
