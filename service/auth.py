"""The bearer-token rule, shared by HTTP (``service.deps``) and gRPC metadata."""

import secrets


def bearer_matches(authorization: str, key: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <key>`` (constant-time comparison of the token)."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), key.encode())
