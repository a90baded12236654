"""A real browser for the page tests: Debian's headless Chromium and its driver, driven by Selenium. Nothing is
downloaded; where either is missing the tests are skipped, except under CI ($CI set), where they fail."""
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def require_chromium() -> None:
    """Skip the calling test module where Chromium is missing and $CI is unset."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
                    allow_module_level=True)


def chromium(width: int = 1280, height: int = 1000):
    """A headless Chromium of the given window size (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver
