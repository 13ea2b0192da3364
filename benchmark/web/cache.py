"""Rendered read pages kept for a short time, answered in front of the app: readers far outnumber writes.

`CachedReads` is ASGI middleware. A GET whose exact target (path and query) has a fresh copy is answered from
it, without routing, validation, a query or a template: a few dozen microseconds of the event loop instead of a
millisecond. A miss goes to the app, and its answer is kept when it is a complete 200 HTML or JSON page. A copy
lives between half and all of `ttl` (drawn per copy), so pages read together at start-up do not expire, and
queue their renders on the loop, together. At most `size` pages are kept (least recently read dropped first).

Renders run on the event loop, deliberately. A render is a few indexed queries and a template (milliseconds of
CPU under the GIL), so a worker thread adds no parallelism, and while one runs the event loop waits for the GIL
at every socket call: in speed/serve_load.py at 200 readers, p99 was 265 ms with renders in threads and
80 ms with renders on the loop.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_KEPT_TYPES = (b"text/html", b"application/json")


@dataclass(frozen=True)
class _Page:
    expires: float  # time.monotonic()
    headers: list[tuple[bytes, bytes]]
    body: bytes


class CachedReads:
    def __init__(self, app: Callable, ttl: float, size: int = 512, skip: tuple[str, ...] = ("/static/",)):
        self.app, self.ttl, self.size, self.skip = app, ttl, size, skip
        self._pages: OrderedDict[str, _Page] = OrderedDict()
        self._lock = threading.Lock()  # tests drive one app from several threads' event loops
        self._spread = random.Random(0)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or self.ttl <= 0 or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        key = scope["path"] + "?" + scope.get("query_string", b"").decode("latin-1")
        with self._lock:
            page = self._pages.get(key)
            if page is not None and time.monotonic() < page.expires:
                self._pages.move_to_end(key)
            else:
                page = None
        if page is not None:
            await send({"type": "http.response.start", "status": 200, "headers": page.headers})
            await send({"type": "http.response.body", "body": page.body})
            return
        await self.app(scope, receive, self._keeping(key, send))

    def _keeping(self, key: str, send: Callable) -> Callable:
        """`send`, noting a complete 200 HTML or JSON answer to keep."""
        start: dict = {}

        async def keep(message: dict) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                start.update(message)
            elif (message["type"] == "http.response.body" and not message.get("more_body", False)
                  and start.get("status") == 200):
                headers = list(start.get("headers", []))
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if kind.startswith(_KEPT_TYPES):
                    self._put(key, headers, message.get("body", b""))

        return keep

    def _put(self, key: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        expires = time.monotonic() + self.ttl * self._spread.uniform(0.5, 1.0)
        with self._lock:
            self._pages[key] = _Page(expires, headers, body)
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
