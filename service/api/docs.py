"""The OpenAPI schema and its two viewers, served as routes so ``API_KEY_ALL`` guards them like any other.

FastAPI's built-in ``/docs``, ``/redoc`` and ``/openapi.json`` are plain Starlette routes that no
dependency reaches, so they would stay open under ``API_KEY_ALL``; the app turns them off and
includes this router instead.
"""

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema of every documented route."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the schema."""
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the schema."""
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
