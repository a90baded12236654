"""featstore serve in a real browser: Debian's headless Chromium driven by Selenium against a live server on
127.0.0.1 (a text search, an image search, the map, a click on a point, the item page, a head's confusion cells),
and the map of a 100,000-point store. Skipped only where Chromium is missing and $CI is unset; in CI it fails."""
import json
import urllib.request

import pytest

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium")

from conftest import SAMPLE  # noqa: E402
from browser_helpers import chromium, require_chromium  # noqa: E402
from serve_helpers import LiveServer, build_store, synthetic_store  # noqa: E402

require_chromium()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    driver = chromium(1280)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, home):
    from featstore.serve.state import ServerState

    state = ServerState(build_store(tmp_path_factory))
    live = LiveServer(state)
    yield live
    live.stop()
    state.close()


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def api_search(server, body):
    req = urllib.request.Request(server.url + "/search", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def grid_paths(driver, grid="grid"):
    return driver.execute_script(      # read in one go: the grid may be re-drawn between two WebDriver calls
        f"return [...document.querySelectorAll('#{grid} .card')].map(c => c.dataset.path)")


def test_search_map_item_and_heads_in_a_browser(browser, server, tmp_path):
    browser.get(server.url + "/#/search")                                      # the page opens on the gallery
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "task")).options) > 1)

    Select(browser.find_element(By.ID, "task")).select_by_value("news")       # a text search
    box = browser.find_element(By.ID, "search-text")
    box.send_keys("the government won the election")
    browser.find_element(By.ID, "search-k").clear()
    browser.find_element(By.ID, "search-k").send_keys("6")
    browser.find_element(By.ID, "search-go").click()
    wait(browser, lambda d: len(grid_paths(d)) == 6)
    expected = api_search(server, {"text": "the government won the election", "k": 6, "task": "news"})
    assert grid_paths(browser) == [r["path"] for r in expected["results"]]

    Select(browser.find_element(By.ID, "task")).select_by_value("flowers")     # an image search (file input)
    photo = sorted((SAMPLE / "sunflowers").glob("*.jpg"))[3]
    browser.find_element(By.ID, "search-file").send_keys(str(photo))
    wait(browser, lambda d: grid_paths(d) and grid_paths(d)[0].endswith(photo.name))
    assert len(grid_paths(browser)) == 6 and "sunflowers" in browser.find_element(By.ID, "grid").text
    wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(tmp_path / "search.png"))

    browser.get(server.url + "/#/map")                                          # the map, and a click on a point
    canvas = wait(browser, lambda d: d.find_element(By.ID, "map-canvas").get_attribute("data-points") == "100"
                  and d.find_element(By.ID, "map-canvas"))
    first = browser.execute_script("const d = map.data; return [d.ids[0], d.x[0], d.y[0]];")
    ox = 8 + first[1] * (900 - 16) - 450
    oy = 8 + (1 - first[2]) * (650 - 16) - 325
    ActionChains(browser).move_to_element_with_offset(canvas, int(round(ox)), int(round(oy))).click().perform()
    wait(browser, lambda d: d.current_url.split("#")[-1].startswith("/item/"))
    wait(browser, lambda d: d.find_element(By.ID, "item-path").text.endswith(".jpg"))
    wait(browser, lambda d: len(grid_paths(d, "item-grid")) == 12)
    browser.save_screenshot(str(tmp_path / "item.png"))
    assert (tmp_path / "search.png").stat().st_size > 10_000 and (tmp_path / "item.png").stat().st_size > 10_000

    browser.get(server.url + "/#/heads")                                        # a head's confusion cells
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-head='fl']"))[0].click()
    cell = wait(browser, lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "td.cell")
                                         if c.text not in ("", "0")), None))
    truth = cell.get_attribute("data-cell").split("|")[0]
    n = int(cell.text)
    cell.click()
    wait(browser, lambda d: len(grid_paths(d, "cell-grid")) == n)
    assert all(f"/{truth}/" in p for p in grid_paths(browser, "cell-grid"))


def test_map_of_100k_points_renders(browser, home, tmp_path):
    from featstore.serve.state import ServerState

    state = ServerState(synthetic_store(tmp_path / "big", 100_000))
    live = LiveServer(state)
    try:
        state.refresh_now()
        urllib.request.urlopen(live.url + "/map?task=synthetic").read()       # computed once, stored
        browser.get(live.url + "/#/map")
        start = browser.execute_script("return performance.timing.loadEventEnd - performance.timing.navigationStart")
        wait(browser, lambda d: d.find_element(By.ID, "map-canvas").get_attribute("data-points") == "100000", 120)
        drawn = browser.execute_script("return window.featstoreMapDrawnAt")
        browser.save_screenshot(str(tmp_path / "map100k.png"))
        print(f"map of 100,000 points drawn {drawn / 1000:.2f} s after navigation start (load event at "
              f"{start / 1000:.2f} s)")
        assert browser.find_elements(By.CSS_SELECTOR, "#map-legend span")     # 8 classes coloured
        canvas = browser.find_element(By.ID, "map-canvas")
        ActionChains(browser).move_to_element(canvas).click().perform()
        wait(browser, lambda d: d.current_url.split("#")[-1].startswith("/item/"))
    finally:
        live.stop()
        state.close()
