"""Rendered read pages kept for a short time: readers far outnumber writes.

A page is rendered again once its copy is `ttl` seconds old; until then every reader gets the copy, with no
query or template. Only 200 answers are kept, at most `size` pages (least recently read dropped first).

Renders run on the event loop, deliberately. A render is a few indexed queries and a template (milliseconds of
CPU under the GIL), so a worker thread adds no parallelism, and while one runs the event loop waits for the GIL
at every socket call: in speed/serve_load.py at 200 readers, p99 was 265 ms with renders in threads and
80 ms with renders on the loop.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response


@dataclass(frozen=True)
class _Page:
    at: float
    body: bytes
    media_type: str | None


class PageCache:
    def __init__(self, ttl: float, size: int = 512):
        self.ttl, self.size = ttl, size
        self._pages: OrderedDict[str, _Page] = OrderedDict()
        self._lock = threading.Lock()  # tests drive one app from several threads' event loops

    def get(self, key: str, render: Callable[[], Response]) -> Response:
        with self._lock:
            page = self._pages.get(key)
            if page is not None and time.monotonic() - page.at <= self.ttl:
                self._pages.move_to_end(key)
                return Response(page.body, media_type=page.media_type)
        response = render()
        if response.status_code == 200 and self.ttl > 0:
            with self._lock:
                self._pages[key] = _Page(time.monotonic(), bytes(response.body), response.media_type)
                self._pages.move_to_end(key)
                while len(self._pages) > self.size:
                    self._pages.popitem(last=False)
        return response
