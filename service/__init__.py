"""The HTTP layer of lstm-serve: FastAPI routes and schemas over the ``models`` domain package."""
