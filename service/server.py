"""Connection-level limits uvicorn itself lacks: time and size bounds on what a client sends.

Uvicorn (0.54, httptools) bounds the number of connections (``limit_concurrency``) and closes idle
kept-alive ones (``timeout_keep_alive``), but it sets no deadline for a request's head or body and no
size bound on the head: a client sending its headers one byte every few seconds (slowloris), or never
finishing a body, holds its connection, its slot under ``limit_concurrency`` and the headers buffered so
far forever. This protocol is uvicorn's own with three bounds added, each answered in the service's
error format and followed by closing the connection:

- the request head (request line and headers) must arrive within ``header_timeout_s`` of the
  connection opening or the request starting (408), and be at most ``max_header_bytes`` (431);
- the body must arrive within ``body_timeout_s`` of the head (408). This cannot live in an ASGI
  middleware: the predict fast path reads bodies before any middleware inside it would see them.

These keep one slow client from holding the service; they do not make it safe to expose directly to
the internet (see the README's Security section for what a reverse proxy must add).
"""

import asyncio
import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_CODES = {408: "request_timeout", 431: "request_header_fields_too_large"}


class BoundedHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with a deadline for the request head and body and a bound on the head size."""

    def __init__(
        self,
        *args: Any,
        header_timeout_s: float = 10.0,
        max_header_bytes: int = 64 * 1024,
        body_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self._head_bytes = 0
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    # --- deadlines -------------------------------------------------------------------------------------

    def _arm(self, seconds: float, message: str, answer: bool = True) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, message, answer)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, message: str, answer: bool) -> None:
        """A deadline passed: 408, unless the app already answered the request whose body is late."""
        self._deadline = None
        self._refuse(408, message, answer or self.cycle is None or not self.cycle.response_started)

    def _refuse(self, status: int, message: str, answer: bool = True) -> None:
        """Answer ``status`` (if ``answer``) and close the connection."""
        self._refused = True
        if self.transport.is_closing():
            return
        log.info("Closing connection from %s: %s", self.client, message)
        if answer:
            body = json.dumps({"error": {"code": _CODES[status], "message": message, "details": {}}}).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status].decode()}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            self.transport.write(head + body)
        self.transport.close()

    # --- uvicorn's protocol, with the bounds -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, f"The request head did not arrive within {self.header_timeout_s:g} s.")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # a request on a kept-alive connection: its head gets the same time
            self._arm(self.header_timeout_s, f"The request head did not arrive within {self.header_timeout_s:g} s.")

    def _count(self, size: int) -> bool:
        """Add to the head's size; False (and the connection refused) once it is over the bound."""
        if self._refused:
            return False
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"The request head is larger than {self.max_header_bytes} bytes.")
            return False
        return True

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value)):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._arm(self.body_timeout_s, f"The request body did not arrive within {self.body_timeout_s:g} s.", answer=False)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()


def bounded_protocol(
    header_timeout_s: float, max_header_bytes: int, body_timeout_s: float
) -> Callable[..., BoundedHttpProtocol]:
    """``BoundedHttpProtocol`` with these bounds, as uvicorn's ``http=`` option takes it (any callable making a
    protocol). A ``partial`` of a module-level class pickles, so uvicorn's spawned worker processes get it too
    (``WORKERS`` > 1); a class made at run time would not."""
    return partial(
        BoundedHttpProtocol,
        header_timeout_s=header_timeout_s,
        max_header_bytes=max_header_bytes,
        body_timeout_s=body_timeout_s,
    )
