"""Logging set-up for command-line entry points (stages, CLI); the library itself only logs."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once: ``HH:MM:SS LEVEL name: message`` on stderr.

    The level comes from ``level``, else the ``HPMCORE_LOG_LEVEL`` environment variable, else INFO.
    """
    logging.basicConfig(
        level=(level or os.environ.get("HPMCORE_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
