"""What every compatibility protocol's HTTP routes share: errors in the protocol's own format, and JSON bodies
read whatever their Content-Type says.

TF Serving and Triton parse the body as JSON whatever the request's Content-Type: TF Serving's documented
``curl -d '{"instances": ...}'`` sends ``application/x-www-form-urlencoded``, ``tritonclient.http`` sends
none, the kserve SDK sends ``application/octet-stream`` with binary tensors. FastAPI only parses declared
JSON, so a ``ProtocolRoute`` hands its body parser the request with the body declared as JSON.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message

from service.errors import Problem, problem_of


def json_request(request: Request, body: bytes) -> Request:
    """``request`` with ``body`` as its whole body, declared as ``application/json``."""
    headers = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return Request({**request.scope, "headers": headers}, receive)


class ProtocolRoute(APIRoute):
    """A route that renders every error with its protocol's ``render_error`` and reads any body as JSON.

    Subclasses set ``render_error``; they may override ``prepare`` to take more out of the body first (the
    V2 binary tensor extension does).
    """

    render_error: Callable[[Problem], Response]

    async def prepare(self, request: Request) -> Request:
        """The request as FastAPI's body parser should see it."""
        if self.body_field is None:
            return request
        return json_request(request, await request.body())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(await self.prepare(request))
            except Exception as exc:  # noqa: BLE001 - every error, unexpected ones included, in the protocol's format
                return type(self).render_error(problem_of(exc, request))

        return handler
