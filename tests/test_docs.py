"""The contract and the docs: every route of the OpenAPI schema is in ``docs/api.md``, the README points there,
and ``/docs`` and ``/redoc`` render in headless Chromium with the network cut (their assets come from an
installed package, not a CDN)."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import create_app
from tests.conftest import make_settings
from tests.process import ServiceProcess, service_env
from tests.test_ui import chromium, find_chromium
from tests.system import required_program

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "docs" / "api.md"

#: Chromium resolves no host name but the service's: any CDN request fails as it would offline.
NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
#: Lets the page's scripts run (virtual time) before the DOM is dumped.
RENDER_BUDGET = "--virtual-time-budget=15000"


def openapi_routes(tmp_path: Path) -> list[tuple[str, str]]:
    schema = create_app(make_settings(tmp_path / "models")).openapi()
    return [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations]


def test_every_openapi_route_is_in_the_contract(tmp_path: Path) -> None:
    contract = CONTRACT.read_text()
    routes = openapi_routes(tmp_path)
    assert len(routes) > 30
    missing = [f"{method} {path}" for method, path in routes if f"`{method} {path}`" not in contract]
    assert not missing, f"docs/api.md does not list: {missing}"


def test_readme_points_to_the_contract_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/api.md)" in readme
    assert "shared/API.md" not in readme


@pytest.fixture(scope="module")
def docs_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    required_program(find_chromium(), "chromium")
    root = tmp_path_factory.mktemp("docs")
    (root / "cwd").mkdir()
    service = ServiceProcess(root / "cwd", service_env(root / "models", DEMO_MODEL="false"), "docs")
    try:
        service.wait_ready()
        yield service
    finally:
        service.kill()


def offline_dom(service: ServiceProcess, page: str, profile: Path) -> str:
    """The page's DOM after its scripts ran in Chromium with no network but the service."""
    html = service.http.get(page).text
    assert not re.findall(r'(?:src|href)="https?://', html), "the page loads something from another host"
    dom = chromium(find_chromium(), profile, NO_NETWORK, RENDER_BUDGET, "--dump-dom", f"{service.url}{page}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


@pytest.mark.e2e
def test_swagger_ui_renders_every_operation_offline(docs_service: ServiceProcess, tmp_path: Path) -> None:
    dom = offline_dom(docs_service, "/docs", tmp_path / "profile")
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert rendered == {path for _, path in openapi_routes(tmp_path)}


@pytest.mark.e2e
def test_redoc_renders_the_operations_offline(docs_service: ServiceProcess, tmp_path: Path) -> None:
    dom = offline_dom(docs_service, "/redoc", tmp_path / "profile")
    for summary in ("Predict", "Step Session", "Infer Version", "Model Status", "Compare"):
        assert f">{summary}<" in dom, summary
