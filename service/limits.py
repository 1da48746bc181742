"""Request body size limit, enforced before any body is parsed."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` with 413: by ``Content-Length`` up front, else while streaming.

    The refusal is raised from ``receive``, inside the route's body parsing, so the app's own 413 handler
    answers it in the usual error format and nothing past the limit is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = int(declared) if declared.isdigit() else 0

        def check() -> None:
            if received > self.max_bytes:
                raise HTTPException(413, f"Request body is larger than the limit of {self.max_bytes} bytes.")

        async def counting_receive() -> Message:
            nonlocal received
            check()
            message = await receive()
            if not declared.isdigit():
                received += len(message.get("body", b""))
                check()
            return message

        await self.app(scope, counting_receive, send)
