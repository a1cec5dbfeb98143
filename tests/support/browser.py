"""Debian's headless Chromium, driven by Playwright's Python API, for end-to-end browser tests.

Playwright's own browser download is never used: ``running_chromium`` launches the ``chromium``
on PATH (``apt-get install -y chromium``), and skips the test, saying so, when there is none or
it does not start. ``BrowserPage`` is one page in a fresh browser context that records what
went wrong on it (console errors, uncaught exceptions, failed requests, HTTP errors) for
``assert_clean()``, and takes full-page screenshots into ``test-artifacts/screenshots/``.

Playwright is imported only when a browser is started, so the rest of the suite does not need it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from tests.support.workers import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Error,
        Page,
        Request,
        Response,
        ViewportSize,
    )

INSTALL_HINT = "install Debian's package with: apt-get install -y chromium"
#: headless, and nothing that reaches out of this machine (its connections would be refused)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: "phone" is a narrow window, not device emulation: the layout is 390 px wide either way
VIEWPORTS: dict[str, ViewportSize] = {
    "desktop": {"width": 1280, "height": 900},
    "phone": {"width": 390, "height": 844},
}
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
#: Chromium's console line for a response with an error status (also seen as the response)
FAILED_RESOURCE = re.compile(r"the server responded with a status of (\d{3})")


@contextlib.contextmanager
def running_chromium() -> Iterator[Browser]:
    """Playwright driving the ``chromium`` on PATH; skips (naming what is missing and how to
    install it) when there is none, Playwright is not installed, or Chromium does not start."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(f"browser tests need chromium, which is not on PATH; {INSTALL_HINT}")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            reason = launch_failure(str(exc))
            pytest.skip(f"chromium at {executable} did not start ({reason}); {INSTALL_HINT}")
        try:
            yield browser
        finally:
            browser.close()


def launch_failure(message: str) -> str:
    """Playwright's launch error in short: its first line and the last of what Chromium wrote
    to stderr (the browser's log precedes Playwright's call log in the message)."""
    browser_log = message.split("Call log:")[0]
    said = [line.split("[err] ", 1)[1] for line in browser_log.splitlines() if "[err] " in line]
    return "; ".join([message.strip().splitlines()[0], *said[-3:]])


class BrowserPage:
    """One page in a fresh context (cookies and storage of its own) that records problems.

    Recorded: console messages of type error, uncaught exceptions, requests that failed, and
    responses with a status of 400 or more unless ``expect_status`` allows them. Anything not
    defined here (``goto``, ``locator``, ``get_by_role``...) is the Playwright page's own.
    """

    def __init__(
        self, browser: Browser, name: str, viewport: str = "desktop", base_url: str | None = None
    ) -> None:
        if viewport not in VIEWPORTS:
            raise ValueError(f"viewport {viewport!r} is not one of {sorted(VIEWPORTS)}")
        self.name = re.sub(r"[^\w.-]+", "-", name).strip("-")
        self.context = browser.new_context(viewport=VIEWPORTS[viewport], base_url=base_url)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self._expected: list[tuple[int, str]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", self._page_error)
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)

    def __getattr__(self, name: str) -> Any:
        if name == "page":  # not set yet: __init__ failed before opening it
            raise AttributeError(name)
        return getattr(self.page, name)

    def expect_status(self, status: int, url_part: str = "") -> None:
        """Responses with ``status`` whose URL contains ``url_part`` are not problems."""
        self._expected.append((status, url_part))

    def assert_clean(self) -> None:
        """Fail, listing them, if anything went wrong on the page so far."""
        self.page.evaluate("0")  # a round trip: events sent before it have been handled
        assert not self.problems, "the page had problems:\n" + "\n".join(self.problems)

    def screenshot(self, name: str) -> Path:
        """A full-page PNG at ``test-artifacts/screenshots/<test name>-<name>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def no_horizontal_overflow(self) -> bool:
        """Whether the document fits the viewport's width (nothing to scroll sideways)."""
        script = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        return bool(self.page.evaluate(script))

    def close(self) -> None:
        self.context.close()

    def _is_expected(self, status: int, url: str) -> bool:
        return any(status == s and part in url for s, part in self._expected)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        status = FAILED_RESOURCE.search(message.text)
        if status and self._is_expected(int(status.group(1)), url):
            return
        where = f" (at {url}:{message.location.get('lineNumber')})" if url else ""
        self.problems.append(f"console error: {message.text}{where}")

    def _page_error(self, error: Error) -> None:
        self.problems.append(f"uncaught exception: {error.name}: {error.message}")

    def _request_failed(self, request: Request) -> None:
        # a request the page itself gave up (navigating away, closing an event stream) is not
        # a failure of the server or of the network
        if request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not self._is_expected(response.status, response.url):
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )


class OpenBrowserPage(Protocol):
    """Signature of the ``open_browser_page`` fixture (for type hints in tests)."""

    def __call__(self, viewport: str = "desktop", base_url: str | None = None) -> BrowserPage: ...
