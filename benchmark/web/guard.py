"""Upload requests are judged before their body is read (ASGI middleware).

The token, the declared Content-Length and the token's rate-limit slot come first; then the body is checked as
it streams (the size cap; every field name, file name and text field UTF-8; a body that stalls for
`idle_timeout` or takes over `body_timeout`) and cut at the first fault, so a refused upload is never read, nor
written to a temp file, past that point, and no client holds a connection by sending a byte now and then. The HTML form carries its token in
the body: the form sends it first, and at most PRE_AUTH_BYTES are read before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

PRE_AUTH_BYTES = 64 * 1024  # what an anonymous form may send before its token field
FIELD_BYTES = 64 * 1024  # one text field (notes are at most 2,000 characters)


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass(frozen=True)
class Gate:
    """What the app tells the guard. `routes`: upload path -> where its token is, "header" (Authorization: Bearer)
    or "form" (the form's `token` field, sent first). `authenticate(token)` returns the owner or raises Refused;
    `reserve(owner)` takes a rate-limit slot or raises Refused; `respond(path, refused)` renders a refusal."""

    routes: dict[str, str]
    max_body: int
    too_large: str
    authenticate: Callable[[str | None], Any]
    reserve: Callable[[Any], None]
    respond: Callable[[str, Refused], Response]
    idle_timeout: float = 30.0  # seconds a body may send nothing before it is cut (408)
    body_timeout: float = 900.0  # seconds the whole body may take


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(422, f"{what} is not valid UTF-8 ({raw[:60]!r}); send UTF-8 text") from None


class _FormInspector:
    """Runs a multipart body through python-multipart's parser as it streams: refuses a field name, file name or
    text value that is not UTF-8 and picks out the `token` field. File contents pass through unread."""

    def __init__(self, boundary: bytes):
        self.token: str | None = None
        self.file_started = False
        self._header = [b"", b""]
        self._name: str | None = None
        self._file = False
        self._value = bytearray()
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end})

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise Refused(400, f"the multipart/form-data body is malformed ({exc})") from None

    def _part_begin(self) -> None:
        self._name, self._file, self._value = None, False, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        field, value = self._header
        self._header = [b"", b""]
        if field.strip().lower() != b"content-disposition":
            return
        _, options = parse_options_header(value)
        self._name = _utf8(options.get(b"name", b""), "a form field's name")
        if b"filename" in options:
            self._file = True
            _utf8(options[b"filename"], f"the file name sent in form field {self._name!r}")

    def _headers_finished(self) -> None:
        self.file_started = self.file_started or self._file

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file:
            return
        self._value += data[start:end]
        if len(self._value) > FIELD_BYTES:
            raise Refused(413, f"form field {self._name!r} is over {FIELD_BYTES // 1024} KiB")

    def _part_end(self) -> None:
        if self._file:
            return
        value = _utf8(bytes(self._value), f"form field {self._name!r}")
        if self._name == "token":
            self.token = value


class _Upload:
    """One upload request: its admission, then its body, counted and inspected as the app reads it."""

    def __init__(self, gate: Gate, scope: dict, receive: Callable):
        self.gate, self.scope, self._receive = gate, scope, receive
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.read = 0
        self.held: list[dict] = []  # messages read before admission, replayed to the app
        self.refused: Refused | None = None
        self.inspector: _FormInspector | None = None
        self.body_done = False
        self.deadline = asyncio.get_running_loop().time() + gate.body_timeout

    async def admit(self) -> None:
        if self.gate.routes[self.scope["path"]] == "header":
            auth = self.headers.get("authorization", "")
            owner = await run_in_threadpool(self.gate.authenticate,
                                            auth[7:].strip() if auth.lower().startswith("bearer ") else None)
            self._check_declared()
        else:
            self._check_declared()
            owner = await run_in_threadpool(self.gate.authenticate, await self._read_token())
        await run_in_threadpool(self.gate.reserve, owner)
        self.scope.setdefault("state", {})["owner"] = owner

    def _check_declared(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise Refused(400, f"Content-Length {length[:40]!r} is not a number of bytes")
        if length is not None and int(length) > self.gate.max_body:
            raise Refused(413, self.gate.too_large)
        kind, options = parse_options_header(self.headers.get("content-type", ""))
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise Refused(415, f"send the submission as multipart/form-data, not {kind.decode('latin-1')!r}")
        self.inspector = _FormInspector(options[b"boundary"])

    async def _read_token(self) -> str | None:
        while self.inspector.token is None:
            if self.inspector.file_started:
                raise Refused(401, "the form's token field must come before its files")
            if self.read > PRE_AUTH_BYTES:
                raise Refused(401, f"no token field in the form's first {PRE_AUTH_BYTES // 1024} KiB; send it first")
            message = await self._next()
            self.held.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        return self.inspector.token

    async def _receive_in_time(self) -> dict:
        """The next message of the body, or Refused(408) when the client holds the connection without sending
        it: nothing for idle_timeout seconds, or not all of it within body_timeout."""
        if self.body_done:  # after the body: a disconnect, waited for as long as the app likes
            return await self._receive()
        left = self.deadline - asyncio.get_running_loop().time()
        idle = left > self.gate.idle_timeout
        try:
            message = await asyncio.wait_for(self._receive(), max(min(left, self.gate.idle_timeout), 0.0))
        except asyncio.TimeoutError:
            raise Refused(408, f"the upload sent nothing for {self.gate.idle_timeout:g} s; connection closed" if idle
                          else f"the upload did not arrive within {self.gate.body_timeout:g} s; connection closed"
                          ) from None
        self.body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    async def _next(self) -> dict:
        message = await self._receive_in_time()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            self.read += len(body)
            if self.read > self.gate.max_body:
                raise Refused(413, self.gate.too_large)  # the chunk that crosses the cap is never handed on
            self.inspector.feed(body)
        return message

    async def receive(self) -> dict:
        """The app's `receive`: held messages first, then the body as it streams, cut at the first fault."""
        if self.refused is not None:
            raise self.refused
        if self.held:
            return self.held.pop(0)
        try:
            return await self._next()
        except Refused as refused:
            self.refused = refused
            raise


class UploadGuard:
    def __init__(self, app: Callable, gate: Gate):
        self.app, self.gate = app, gate

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.gate.routes:
            await self.app(scope, receive, send)
            return
        upload = _Upload(self.gate, scope, receive)
        try:
            await upload.admit()
        except Refused as refused:
            await self._refuse(scope, send, refused)
            return
        started = False

        async def guarded_send(message: dict) -> None:
            # After a cut the app answers its own way (FastAPI: 400 "error parsing the body"); the refusal's own
            # answer replaces it.
            nonlocal started
            if upload.refused is not None and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, upload.receive, guarded_send)
        except Refused:
            pass
        if upload.refused is not None and not started:
            await self._refuse(scope, send, upload.refused)

    async def _refuse(self, scope: dict, send: Callable, refused: Refused) -> None:
        async def disconnected() -> dict:
            return {"type": "http.disconnect"}

        response = self.gate.respond(scope["path"], refused)
        response.headers.update({**refused.headers, "Connection": "close"})
        await response(scope, disconnected, send)
