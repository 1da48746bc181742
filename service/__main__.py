"""``python -m service``: serve the app with uvicorn, configured from the environment."""

import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.config import get_settings
from service.server import bounded_protocol


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM is the normal way to stop (``docker stop``): exit with status 0.

    Uvicorn catches SIGTERM itself, shuts down gracefully (lifespan shutdown included), then restores this
    handler and raises the signal again, which would otherwise end the process with -SIGTERM (143)."""
    raise SystemExit(0)


def main() -> None:
    """Run the service until interrupted."""
    try:
        settings = get_settings()
    except ValidationError as exc:  # a setting a user got wrong: say which and why, without a traceback
        sys.exit(f"lstm-serve: cannot start: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # Each worker is a spawned process importing service.app:app, so each reads the same settings.
        workers=settings.workers,
        # Bounds on what one client may hold (README: Security): connections at once, idle keep-alive,
        # and the time and size of a request's head and body.
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        http=bounded_protocol(settings.header_read_timeout_s, settings.max_header_bytes, settings.body_read_timeout_s),
        # A WebSocket message is bounded like an HTTP body (larger ones close the stream with 1009), so one
        # stream holds at most STREAM_MAX_PENDING such messages.
        ws_max_size=settings.max_body_bytes,
    )


if __name__ == "__main__":
    main()
