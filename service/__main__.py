"""``python -m service``: serve the app with uvicorn, configured from the environment."""

import logging
import signal
from types import FrameType

import uvicorn

from service.config import get_settings
from service.server import bounded_protocol


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM is the normal way to stop (``docker stop``): exit with status 0.

    Uvicorn catches SIGTERM itself, shuts down gracefully (lifespan shutdown included), then restores this
    handler and raises the signal again, which would otherwise end the process with -SIGTERM (143)."""
    raise SystemExit(0)


def main() -> None:
    """Run the service until interrupted."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
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
