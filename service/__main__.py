"""``python -m service``: serve the app with uvicorn, configured from the environment."""

import logging
import signal
from types import FrameType

import uvicorn

from service.config import get_settings


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
    uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
