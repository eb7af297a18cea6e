"""Headless Chromium driven by Selenium, to check the HTML egt writes (tests/reporting/test_view.py, benchmarks/bench_view.py).

Chromium and its driver come from the system (Debian/Ubuntu: `apt-get install chromium chromium-driver`;
`.ci/run` installs them when missing), Selenium from PyPI (`pip install 'egt[test]'`). The driver's
path is always given, so Selenium Manager never tries to download one. The flags keep Chromium off
the network: on a closed network its background connections are refused and logged as errors.
`EGT_CHROMIUM` and `EGT_CHROMEDRIVER` override where the two binaries are looked for.

    from egt.reporting.browser import headless_chromium, console_errors
    with headless_chromium() as driver:
        driver.get(Path("view.html").resolve().as_uri())
        assert not console_errors(driver)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

from egt.core.errors import EgtError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` (Debian/Ubuntu) and "
                "`pip install 'egt[test]'` (selenium)")


def _which(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    return next((path for name in names if (path := shutil.which(name))), None)


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver) paths; EgtError saying what is missing and how to install it."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    chromium = _which("EGT_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _which("EGT_CHROMEDRIVER", "chromedriver")
    if chromium is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromedriver")
    if missing:
        raise EgtError(f"headless browser checks need {', '.join(missing)}: {INSTALL_HINT}")
    return chromium, driver


@contextmanager
def headless_chromium(width: int = 1400, height: int = 900):
    """A Selenium Chrome driver on a fresh profile, with the browser console log captured; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_binaries()
    profile = tempfile.mkdtemp(prefix="egt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    """Browser console entries at level SEVERE since the last call (errors, uncaught exceptions, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
