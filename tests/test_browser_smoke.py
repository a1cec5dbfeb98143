"""The browser tests' footing: Debian's Chromium renders a page of the production server.

The API documentation (Swagger UI, from installed files) lists the API's operations in
Chromium with no console error, no failed request, and nothing wider than a 1280 px window.
"""

from __future__ import annotations

from tests.support import BrowserPage
from tests.support.control_plane import ServedControlPlane

#: where Swagger UI says why it could not list the operations
SWAGGER_ERROR = ".swagger-ui .errors-wrapper, .swagger-ui .version-pragma"


def test_the_api_docs_render_cleanly_in_chromium(
    control_plane_server: ServedControlPlane, browser_page: BrowserPage
) -> None:
    browser_page.goto(control_plane_server.url + "/api/v1/docs")
    rendered = browser_page.locator(f".opblock, {SWAGGER_ERROR}").first
    rendered.wait_for(state="visible", timeout=15_000)  # the operations, or why there are none
    browser_page.screenshot("docs")

    browser_page.assert_clean()
    shown = browser_page.locator(SWAGGER_ERROR).all_inner_texts()
    assert browser_page.locator(".opblock").count() > 10, f"Swagger UI listed none: {shown}"
    assert browser_page.no_horizontal_overflow(), "the docs are wider than a 1280 px window"
