"""Stopping a training loop cleanly on SIGINT or SIGTERM.

:func:`stop_requests` installs handlers that only record the signal; the loop looks at the flag
after each step, so the step in progress finishes, a checkpoint is written and the loop exits
(``gradflow train`` then says how to resume). A second signal of the same kind while the first is
being handled falls back to the signal's usual behaviour (KeyboardInterrupt for SIGINT,
termination for SIGTERM): the files are written atomically, so even that loses nothing but the
steps since the last checkpoint. Handlers can only be installed in the main thread; elsewhere (a
Dask worker thread, a notebook's background thread) the context manager does nothing and the
flag stays unset.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """The first stop signal received, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_requests(enabled: bool = True) -> Iterator[StopFlag]:
    """Within the block, SIGINT and SIGTERM set the yielded :class:`StopFlag` instead of
    interrupting (when ``enabled`` and in the main thread); the old handlers come back after."""
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.signum is None:
            flag.signum = signum
            return
        old = previous.get(signum)
        signal.signal(signum, old if old is not None else signal.SIG_DFL)
        if signum == signal.SIGINT and old in (signal.default_int_handler, None):
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:  # e.g. started with nohup: leave it so
            continue
        previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
