"""Headless Chromium (Debian's, at /usr/bin/chromium) driven by Python Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import broker, kafka, make_scenario, pytest_runtest_makereport  # noqa: F401
from tests.tools import missing

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope: Playwright's sync API keeps an event loop running in the main thread while it
# lives, which breaks every asyncio test collected after this folder.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package")
    if not CHROMIUM.exists():
        missing(f"Chromium at {CHROMIUM} (Debian package chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def watched_page(browser: Any, height: int = 900) -> tuple[Any, list[str]]:
    """A fresh page and the JavaScript errors it raises (each test asserts there were none)."""
    page = browser.new_page(viewport={"width": 1366, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors
