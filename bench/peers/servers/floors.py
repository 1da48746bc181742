"""The two floors: what answering the benchmark request costs before any model work.

* ``asgi_app`` - a raw ASGI app on uvicorn: reads the body, answers fixed JSON (the HTTP floor);
* ``fastapi_app`` - FastAPI reading the body in a route, answering the same fixed JSON.

Run: ``python -m uvicorn bench.peers.servers.floors:asgi_app --port 8003`` (or ``:fastapi_app``).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

#: lstm-serve's answer shape for one sequence, encoded once.
FIXED = b'{"model":"bench","version":1,"predictions":[{"probability":0.5,"label":1}]}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(FIXED)).encode())]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Every HTTP request, whatever its path: read the whole body, answer ``FIXED``."""
    if scope["type"] == "lifespan":
        while True:
            if (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": FIXED})


fastapi_app = FastAPI(title="FastAPI floor", openapi_url=None)


@fastapi_app.get("/health/ready")
async def ready() -> dict[str, str]:
    """Up."""
    return {"status": "ready"}


@fastapi_app.post("/models/{name}/predict")
async def predict(name: str, request: Request) -> Response:
    """Read the body, answer ``FIXED``: routing and the request object, no parsing."""
    await request.body()
    return Response(FIXED, media_type="application/json")
