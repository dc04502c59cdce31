"""One logger and one progress convention for the whole package.

* Diagnostics and stage messages go through :func:`get_logger` (standard ``logging``, names under
  ``onnxprune``). The CLI calls :func:`configure` once; library users configure ``logging`` as they
  like, and by default the package prints nothing.
* Long loops wrap their iterable in :func:`progress`: a bar redrawn in place when stderr is a
  terminal, and silent in pipes and CI (a summary line is logged at the end instead).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

__all__ = ["get_logger", "configure", "progress", "quieted"]

T = TypeVar("T")
ROOT = "onnxprune"
logging.getLogger(ROOT).addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The package logger for module ``name`` (pass ``__name__``)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


@contextmanager
def quieted(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, logger ``name`` (a package module) passes only ``level`` and above; for a
    stage run many times inside another (e.g. a quick refit per candidate allocation)."""
    logger = get_logger(name)
    before = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(before)


def configure(verbosity: int = 0, stream=None) -> None:
    """CLI set-up: INFO messages as plain lines on stderr (``-v``: DEBUG, ``-q``: warnings only)."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_onnxprune", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._onnxprune = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _interactive(stream) -> bool:
    if os.environ.get("CI") or os.environ.get("ONNXPRUNE_NO_PROGRESS"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             logger: logging.Logger | None = None, weight=None) -> Iterator[T]:
    """Yield ``items``, drawing a progress bar on an interactive stderr.

    ``weight(item)`` gives how many units one item counts for (e.g. images in a batch); by default 1.
    In a pipe or under CI nothing is drawn; one summary line goes to ``logger`` at DEBUG level.
    """
    log = logger or get_logger(ROOT)
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = sys.stderr
    draw = _interactive(stream) and log.isEnabledFor(logging.INFO)
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += weight(item) if weight else 1
        now = time.perf_counter()
        if draw and (now - last > 0.1 or (total is not None and done >= total)):
            last = now
            rate = done / max(now - start, 1e-9)
            if total:
                frac = min(done / total, 1.0)
                bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
                line = f"  {desc} [{bar}] {done}/{total} {unit} {rate:.1f} {unit}/s"
            else:
                line = f"  {desc} {done} {unit} {rate:.1f} {unit}/s"
            stream.write("\r" + line[:110].ljust(110))
            stream.flush()
    if draw:
        stream.write("\r" + " " * 110 + "\r")
        stream.flush()
    log.debug("%s: %d %s in %.1f s", desc, done, unit, time.perf_counter() - start)
