"""`MetadataRefresher`: the hub's thread that keeps signed TUF metadata from expiring.

It refreshes once at start, before devices are listened to (a hub that was down for days serves fresh
metadata from its first answer), then every ``interval_s``; `refresh_now` asks the thread for a refresh and
waits for it. The interval is far shorter than the shortest lifetime (the timestamp's day), and a role is
re-signed once half its lifetime is gone, so a missed check or two never lets metadata expire.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hub.bundles.tuf_repository import TufRepository
from hub.errors import HubError

__all__ = ["MetadataRefresher"]

log = logging.getLogger(__name__)


class MetadataRefresher:
    """Calls ``repository().refresh()`` at start and every ``interval_s`` seconds until `stop`."""

    def __init__(self, repository: Callable[[], TufRepository], *, interval_s: float) -> None:
        self._repository = repository
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._started = 0
        self._finished = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Refresh now (before devices fetch anything), then start the thread."""
        self._stopping.clear()
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="tuf-metadata-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits for a refresh in progress); safe to call twice."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def refresh_now(self, timeout_s: float = 30.0) -> bool:
        """Ask the thread for a refresh and wait until one that started after this call has finished."""
        with self._done:
            wanted = self._started + 1
            self._wake.set()
            return self._done.wait_for(lambda: self._finished >= wanted, timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            if self._stopping.is_set():
                return
            self._refresh()

    def _refresh(self) -> None:
        with self._done:  # clear the request and count the run in one step, so no request is lost
            self._wake.clear()
            self._started += 1
            run = self._started
        try:
            resigned = self._repository().refresh()
            if resigned:
                log.info("re-signed TUF metadata: %s", ", ".join(resigned))
        except (HubError, OSError) as exc:  # keep trying: the next check may find the disk or keys back
            log.error("refreshing TUF metadata failed: %s", exc)
        with self._done:
            self._finished = run
            self._done.notify_all()
