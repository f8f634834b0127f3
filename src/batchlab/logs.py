"""Logging for the pipeline's jobs: one timestamped line per event, to the rule's log file and stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(path: str | None = None) -> None:
    """Log every event to ``path`` (a rule's log file: follow it with ``tail -f``) and all but the per-evaluation
    progress lines to stderr, so parallel jobs keep the console readable."""
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(lambda record: not getattr(record, "progress", False) or not path)
    handlers: list[logging.Handler] = [console]
    if path:
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
