"""The bearer-token rule, shared by HTTP (``service.deps``), WebSocket streams and gRPC metadata."""

import secrets


def bearer_matches(authorization: str, key: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <key>`` (constant-time comparison of the token)."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), key.encode())


#: The WebSocket subprotocol a browser offers beside ``bearer.<key>`` (and the server selects): browsers cannot
#: set an ``Authorization`` header on a WebSocket, but they can offer subprotocols.
STREAM_SUBPROTOCOL = "lstm-serve"
_BEARER_SUBPROTOCOL = "bearer."


def authorization_of(authorization: str, subprotocols: list[str]) -> str:
    """The ``Authorization`` value a WebSocket handshake carries: its header, else ``Bearer <key>`` from an
    offered ``bearer.<key>`` subprotocol (the browser way), else ``""``."""
    if authorization:
        return authorization
    for offered in subprotocols:
        if offered.startswith(_BEARER_SUBPROTOCOL):
            return "Bearer " + offered.removeprefix(_BEARER_SUBPROTOCOL)
    return ""
