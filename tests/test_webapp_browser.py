"""The web app in a real browser (Debian's headless Chromium + Selenium, a live server on 127.0.0.1): the gallery's
paging and filters, a shared URL restoring a view, a box and a lasso on the map becoming the gallery's filter, and
the curation actions against the write endpoints: a relabel that fit-head then uses, a bulk accept of the audit's
suggestions, undo, and a --read-only server's refusal shown on the page. Skipped only where Chromium is missing
and $CI is unset."""
import csv
import json
import os
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium")

from click.testing import CliRunner  # noqa: E402

from browser_helpers import chromium, require_chromium  # noqa: E402
from serve_helpers import LiveServer, build_store  # noqa: E402

require_chromium()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = os.environ.get("FEATSTORE_SCREENSHOTS")        # a folder: keep the page screenshots there (docs/images)
WRONG = 4                                              # roses stored as tulips before the audit


@pytest.fixture(scope="module")
def browser():
    driver = chromium(1400)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    """The serve test store with WRONG roses relabelled tulips, then audited (findings stored)."""
    from featstore.cli.main import cli

    root = build_store(tmp_path_factory)
    roses = sorted(p for p in _labels(root, "flowers") if "/roses/" in p)[:WRONG]
    table = tmp_path_factory.mktemp("wrong") / "wrong.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *[[p, "tulips"] for p in roses]])
    ages = table.with_name("age.csv")                         # a numeric task: 40 distinct values
    with open(ages, "w", newline="") as f:
        photos = sorted(p for p in _labels(root, "flowers"))
        csv.writer(f).writerows([["path", "label"], *[[p, str(i % 40)] for i, p in enumerate(photos)]])
    for args in (["label", "--task", "flowers", "--csv", str(table)], ["audit", "--task", "flowers"],
                 ["label", "--task", "age", "--csv", str(ages)]):
        r = CliRunner().invoke(cli, [*args, "--store", str(root)])
        assert r.exit_code == 0, r.output
    return root


def _labels(root, task):
    from featstore.store.db import Store

    with Store.open(root) as st:
        return dict(st.con.execute("SELECT path, label FROM labels WHERE task = ?", [task]).fetchall())


@pytest.fixture(scope="module")
def server(store):
    from featstore.serve.state import ServerState

    state = ServerState(store)
    live = LiveServer(state)
    yield live
    live.stop()
    state.close()


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def total(driver):
    t = driver.find_element(By.ID, "grid-total").get_attribute("data-total")
    return int(t) if t else None


def cards(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#gallery .card')].map(c => [Number(c.dataset.item), c.dataset.path,"
        " c.querySelector('.meta').textContent])")


def api(server, path):
    return json.load(urllib.request.urlopen(server.url + path))


def shot(driver, name):
    if SHOTS:
        driver.save_screenshot(os.path.join(SHOTS, name))


def test_gallery_pages_filters_and_a_shared_url(browser, server):
    browser.get(server.url + "/")
    wait(browser, lambda d: total(d) == 115)         # opens on the data: every item (two tasks, none chosen yet)
    assert browser.find_element(By.ID, "view-grid").is_displayed()
    first = cards(browser)
    assert first and [c[0] for c in first] == sorted(c[0] for c in first)
    browser.execute_script("document.getElementById('gallery').scrollTop = 1e9")     # the last row, paged in
    last = api(server, "/grid/ids")["ids"][-1]
    wait(browser, lambda d: last in [c[0] for c in cards(d)])
    assert len(cards(browser)) < 115                           # virtualised: only the rows in view are drawn

    browser.get(server.url + "/#/grid?task=flowers")
    roses = "[data-facet=label] input[data-value=roses]"
    wait(browser, lambda d: total(d) == 115 and d.find_elements(By.CSS_SELECTOR, roses))
    browser.find_element(By.CSS_SELECTOR, "[data-facet=label] input[data-value=roses]").click()
    wait(browser, lambda d: total(d) == 20 - WRONG)
    assert all(c[2].startswith("roses") for c in cards(browser))
    browser.find_element(By.CSS_SELECTOR, "[data-facet=label] input[data-value=tulips]").click()
    wait(browser, lambda d: total(d) == 40)
    where = browser.find_element(By.ID, "f-where")
    where.send_keys("path LIKE '%tulips%'", Keys.ENTER)       # the guarded SQL part combines with the facets
    wait(browser, lambda d: total(d) == 20)
    assert sorted({c[2].split(" ")[0] for c in cards(browser)}) == ["tulips"]
    shot(browser, "gallery.png")
    shared = browser.current_url
    assert "label=roses" in shared and "label=tulips" in shared and "where=" in shared

    browser.get(server.url + "/#/map")                           # elsewhere, then the shared URL again
    browser.get(shared)
    browser.refresh()
    wait(browser, lambda d: total(d) == 20)
    checked = browser.execute_script("return [...document.querySelectorAll('[data-facet=label] input:checked')]"
                                     ".map(i => i.dataset.value)")
    assert sorted(checked) == ["roses", "tulips"]
    assert browser.find_element(By.ID, "f-where").get_attribute("value") == "path LIKE '%tulips%'"

    browser.get(server.url + "/#/grid?task=flowers&where=" + urllib.parse.quote("(SELECT 1) = 1"))
    wait(browser, lambda d: "subquery" in d.find_element(By.ID, "grid-total").text)


def _map_ready(browser, server):
    browser.get(server.url + "/#/map")
    browser.find_element(By.CSS_SELECTOR, "#map-method option[value=pca]").click()
    return wait(browser, lambda d: d.execute_script("return map.data && map.data.method === 'pca' && "
                                                    "document.getElementById('map-canvas').dataset.points") and
                d.find_element(By.ID, "map-canvas"))


def _drag(browser, canvas, points):
    """Press at the first point (canvas pixels), move through the others, release."""
    w = canvas.size["width"]
    scale = w / 900
    chain = ActionChains(browser).move_to_element_with_offset(canvas, int(points[0][0] * scale - w / 2),
                                                             int(points[0][1] * scale - canvas.size["height"] / 2))
    chain.click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        chain.move_by_offset(int((x1 - x0) * scale), int((y1 - y0) * scale))
    chain.release().perform()


def test_map_box_and_lasso_become_the_gallery_filter(browser, server):
    canvas = _map_ready(browser, server)
    d = browser.execute_script("return map.data")
    px = [(8 + x * 884, 8 + (1 - y) * 634) for x, y in zip(d["x"], d["y"])]
    browser.find_element(By.ID, "mode-box").click()
    box = (100, 80, 520, 560)
    inside = {i for i, (x, y) in zip(d["ids"], px) if box[0] < x < box[2] and box[1] < y < box[3]}
    assert 0 < len(inside) < d["n"]
    _drag(browser, canvas, [(box[0], box[1]), (box[2] - 100, box[3] - 100), (box[2], box[3])])
    wait(browser, lambda d_: "region=" in d_.current_url and total(d_) is not None)
    got = set(api(server, "/grid/ids?" + browser.current_url.split("?", 1)[1])["ids"])
    assert abs(len(got) - len(inside)) <= 2 and len(got & inside) >= len(inside) - 2     # edge pixels may round
    wait(browser, lambda d_: total(d_) == len(got))
    assert browser.find_element(By.ID, "region-note").is_displayed()

    canvas = _map_ready(browser, server)                       # a lasso: a triangle
    browser.find_element(By.ID, "mode-lasso").click()
    tri = [(60, 60), (840, 60), (450, 600), (62, 62)]
    _drag(browser, canvas, tri + [(70, 70)])
    wait(browser, lambda d_: "region=" in d_.current_url and total(d_) is not None)
    lassoed = total(browser)
    assert 0 < lassoed <= d["n"]
    shot(browser, "gallery-from-lasso.png")


def test_map_zoom_hover_and_colour(browser, server):
    canvas = _map_ready(browser, server)
    before = browser.execute_script("return map.scale")
    browser.execute_script("document.getElementById('map-canvas').dispatchEvent(new WheelEvent('wheel', "
                           "{deltaY: -100, clientX: 300, clientY: 300, bubbles: true, cancelable: true}))")
    assert browser.execute_script("return map.scale") > before
    browser.find_element(By.ID, "map-reset").click()
    first = browser.execute_script("const d = map.data; return [d.ids[0], d.x[0], d.y[0]];")
    w = canvas.size["width"] / 900
    ActionChains(browser).move_to_element_with_offset(canvas, int((8 + first[1] * 884) * w - canvas.size["width"] / 2),
                                                      int((8 + (1 - first[2]) * 634) * w - canvas.size["height"] / 2)
                                                      ).perform()
    tip = wait(browser, lambda d: d.find_element(By.ID, "map-tip").is_displayed() and d.find_element(By.ID, "map-tip"))
    assert tip.find_element(By.TAG_NAME, "img").get_attribute("src").endswith("/thumbnail?size=128")

    browser.find_element(By.CSS_SELECTOR, "#task option[value=age]").click()     # a numeric task: a colour bar
    wait(browser, lambda d: d.find_elements(By.ID, "colour-bar"))
    assert "39" in browser.find_element(By.ID, "map-legend").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#map-legend i")           # no legend of 40 categories
    browser.find_element(By.CSS_SELECTOR, "#task option[value='']").click()


def _select(browser, n):
    """Click the first card, shift-click the n-th: n selected."""
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) >= n)
    at = "#gallery .card[data-index='{}'] img"      # found afresh: a click re-draws the cards
    browser.find_element(By.CSS_SELECTOR, at.format(0)).click()
    wait(browser, lambda d: d.find_element(By.ID, "sel-count").get_attribute("data-n") == "1")
    last = browser.find_element(By.CSS_SELECTOR, at.format(n - 1))
    ActionChains(browser).key_down(Keys.SHIFT).click(last).key_up(Keys.SHIFT).perform()
    wait(browser, lambda d: d.find_element(By.ID, "sel-count").get_attribute("data-n") == str(n))
    return [c[0] for c in cards(browser)[:n]]


def test_relabel_bulk_accept_fit_head_and_undo(browser, server, store):
    from featstore.cli.main import cli

    browser.get(server.url + "/#/grid?task=flowers&label=daisy")
    wait(browser, lambda d: total(d) == 20)
    _select(browser, 6)
    browser.find_element(By.ID, "act-label").send_keys("weed")
    browser.find_element(By.ID, "act-label-go").click()
    wait(browser, lambda d: "changed" in d.find_element(By.ID, "act-status").text, 90)
    wait(browser, lambda d: total(d) == 14)                    # the view re-read: six are no longer daisy
    labels = _labels(store, "flowers")
    weed = {p for p, lab in labels.items() if lab == "weed"}
    assert len(weed) == 6
    r = CliRunner().invoke(cli, ["fit-head", "--task", "flowers", "--name", "after-relabel", "--store", str(store),
                                 "--json"])
    assert r.exit_code == 0, r.output
    from featstore.store.db import Store

    with Store.open(store) as st:
        classes = json.loads(st.con.execute("SELECT classes FROM heads WHERE name = 'after-relabel'").fetchone()[0])
    assert "weed" in classes                                     # fit-head used the page's labels

    browser.find_element(By.ID, "undo").click()                  # undo: the six are daisy again
    wait(browser, lambda d: "undid" in d.find_element(By.ID, "act-status").text, 90)
    wait(browser, lambda d: total(d) == 20)
    after_undo = _labels(store, "flowers")
    assert not any(lab == "weed" for lab in after_undo.values()) and all(after_undo[p] == "daisy" for p in weed)

    browser.get(server.url + "/#/grid?task=flowers&finding=label_issue")     # bulk accept of the suggestions
    wait(browser, lambda d: (total(d) or 0) >= 1)
    now = _labels(store, "flowers")
    wrong = [p for p in sorted(now) if "/roses/" in p and now[p] == "tulips"]
    assert len(wrong) == WRONG
    from featstore.store.db import Store
    from featstore.store.edits import audit_findings

    with Store.open(store) as st:
        suggestions = {f["path"]: f["suggested"] for f in audit_findings(st, "flowers")
                       if f["kind"] == "label_issue" and f["suggested"]}
    assert total(browser) == len({f for f in suggestions}) and suggestions
    shot(browser, "gallery-findings.png")
    browser.find_element(By.ID, "sel-none").click()              # the selection outlives views: start afresh
    browser.find_element(By.ID, "sel-all").click()
    wait(browser, lambda d: d.find_element(By.ID, "sel-count").get_attribute("data-n") == str(total(d)))
    browser.find_element(By.ID, "act-accept").click()
    wait(browser, lambda d: "changed" in d.find_element(By.ID, "act-status").text, 90)
    after = _labels(store, "flowers")
    for path, suggested in suggestions.items():                  # each flagged item: its suggestion, accepted
        assert after[path] == suggested
    fixed = [p for p in wrong if after[p] == "roses"]
    assert fixed                                                 # planted errors the audit caught are fixed
    with Store.open(store) as st:                                # what fit-head reads: the accepted labels
        s = st.pick_set("efficientnet-lite0")
        hashes, _, truth = st.labelled(s, "flowers")
        by_hash = dict(zip(hashes, truth))
        path_hash = dict(st.con.execute("SELECT path, hash FROM items").fetchall())
    assert all(by_hash[path_hash[p]] == "roses" for p in fixed)

    browser.get(server.url + "/#/history")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-table tr[data-edit]")) >= 2)


def test_read_only_server_refuses_and_says_so(browser, store):
    from featstore.serve.state import ServerState

    state = ServerState(store, read_only=True)
    live = LiveServer(state)
    try:
        browser.get(live.url + "/#/grid?task=flowers")
        wait(browser, lambda d: total(d) == 115)
        assert browser.find_element(By.ID, "read-only").is_displayed()
        _select(browser, 2)
        browser.find_element(By.ID, "act-label").send_keys("nope")
        browser.find_element(By.ID, "act-label-go").click()
        status = wait(browser, lambda d: "read-only" in d.find_element(By.ID, "act-status").text
                      and d.find_element(By.ID, "act-status"))
        assert "error" in status.get_attribute("class")
        assert "nope" not in _labels(store, "flowers").values()
    finally:
        live.stop()
        state.close()


def test_refit_from_the_page_shows_leaderboard_and_confusion(browser, server):
    browser.get(server.url + "/#/heads")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#refit-task option[value=flowers]"))
    browser.find_element(By.CSS_SELECTOR, "#refit-task option[value=flowers]").click()
    browser.find_element(By.ID, "refit-go").click()
    wait(browser, lambda d: "refitting" in d.find_element(By.ID, "refit-status").text
         or "done" in d.find_element(By.ID, "refit-status").text)
    assert api(server, "/stats")["items"]["ok"] == 115            # the server answers while the job runs
    wait(browser, lambda d: "done" in d.find_element(By.ID, "refit-status").text, 180)
    rows = browser.find_elements(By.CSS_SELECTOR, "#refit-leaderboard tr")
    assert len(rows) >= 2
    cells = browser.find_elements(By.CSS_SELECTOR, "#refit-result table.confusion td.cell")
    assert sum(int(c.text) for c in cells) > 0
    shot(browser, "refit.png")


def test_gallery_of_100k_items_scrolls_and_filters(browser, home, tmp_path):
    from featstore.serve.state import ServerState
    from serve_helpers import synthetic_store

    state = ServerState(synthetic_store(tmp_path / "big", 100_000))
    live = LiveServer(state)
    try:
        state.refresh_now()
        browser.get(live.url + "/#/grid?task=synthetic")
        wait(browser, lambda d: total(d) == 100_000, 120)
        drawn = browser.execute_script("return document.getElementById('gallery-inner').dataset.shown")
        assert 0 < int(drawn) < 200                                    # only the rows on screen exist
        for fraction in (0.5, 1.0):
            browser.execute_script(f"const g = document.getElementById('gallery'); "
                                   f"g.scrollTop = g.scrollHeight * {fraction}")
            at = int(99_999 * fraction) - 200
            wait(browser, lambda d: any(int(c.get_attribute("data-index")) >= at
                                        for c in d.find_elements(By.CSS_SELECTOR, "#gallery .card")))
        last = [c[1] for c in cards(browser)]
        assert "/synthetic/" in last[-1]
        browser.find_element(By.CSS_SELECTOR, "[data-facet=label] input[data-value=c3]").click()
        expected = api(live, "/grid?task=synthetic&label=c3&limit=1")["total"]
        wait(browser, lambda d: total(d) == expected and all(c[2].startswith("c3") for c in cards(d)))
        assert 5_000 < expected < 20_000
    finally:
        live.stop()
        state.close()
