"""The OpenAPI schema, Swagger UI and ReDoc, served as routes so ``API_KEY_ALL`` guards them like any other.

FastAPI's built-in ``/openapi.json``, ``/docs`` and ``/redoc`` (and FastAPIOffline's) are added straight
to the app, where no router dependency reaches them: they stayed open under ``API_KEY_ALL``. The app turns
them off and includes this router instead. The pages load Swagger UI and ReDoc from the assets the
``fastapi-offline`` package ships (no CDN), served here too.
"""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from models.errors import NotFound

OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
STATIC_URL = "/static-offline-docs"
#: Swagger UI's and ReDoc's files as fastapi-offline installs them beside its module.
ASSETS = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema of every documented route."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the schema."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the schema."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        with_google_fonts=False,
    )


@router.get(STATIC_URL + "/{asset}")
async def static_asset(asset: str) -> FileResponse:
    """One of Swagger UI's or ReDoc's files."""
    path = ASSETS / asset
    if "/" in asset or asset.startswith(".") or not path.is_file():
        raise NotFound(f"No documentation asset '{asset}'.", asset=asset)
    return FileResponse(path)
