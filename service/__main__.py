"""``python -m service``: serve the app with uvicorn, configured from the environment."""

import logging

import uvicorn

from service.config import get_settings


def main() -> None:
    """Run the service until interrupted."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
