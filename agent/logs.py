"""Structured logs: one JSON line per decision, on stderr.

What may be logged is decided where the event is built: labels, exchanges,
methods, paths without their query, outcomes, latencies. Never a secret, a
passphrase, a PIN, a signature or a signed query (which carries one).
"""

from __future__ import annotations

import sys
from typing import TextIO

import structlog


def configure(stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(**context)
