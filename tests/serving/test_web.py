"""The web app in a real browser: headless Debian Chromium (Selenium) against a real ``llm4rec serve``.

One server (a small semantic-knn model in a registry, a SQLite store, a reports directory) is shared by the
module; the rollout test has its own registry and server. Every test saves screenshots under its tmp_path
(also into $LLM4REC_SCREENSHOTS when set) and fails on any SEVERE entry of the browser console.
"""

from __future__ import annotations

import secrets
import shutil
import time

import polars as pl
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.serving import _models
from tests.serving._server import Server, create_key
from tests.serving.browser import Browser, make_driver

pytestmark = pytest.mark.slow

WIDE, NARROW = (1280, 900), (390, 844)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-bundles")
    return {"v1": _models.bundle(root, "semantic-knn"), "v2": _models.bundle(root, "semantic-knn", n_items=120)}


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory):
    """What `llm4rec evaluate --json` and `llm4rec ope --json` write, run for real on small data."""
    from llm4rec.cli.main import main
    from llm4rec.data.export import save_dataset
    from tests.cli.test_ope_cmd import write_logs

    work = tmp_path_factory.mktemp("web-cli")
    out = tmp_path_factory.mktemp("web-reports")
    data = save_dataset(_models.data(), work / "synthetic")
    assert main(["evaluate", "--data", str(data), "--model", "ease", "--json", str(out / "ease.json")]) == 0
    logs, target = write_logs(work / "random.csv"), write_logs(work / "target.csv", seed=1)
    assert main(["ope", "--logs", str(logs), "--policy", f"empirical:{target}", "--bootstrap", "100",
                 "--json", str(out / "ope.json")]) == 0
    return out


@pytest.fixture(scope="module")
def site(bundles, reports_dir, tmp_path_factory):
    """The shared server and its keys: admin (dashboard) and write (the recommendation page)."""
    root = tmp_path_factory.mktemp("web-site")
    registry = _models.registry(bundles["v1"], root / "registry")
    store = f"sqlite:///{root}/events.db"
    admin, writer = create_key(store, "admin", "admin"), create_key(store, "read,write", "page")
    server = Server(registry, store, root / "server.log", reports=str(reports_dir)).start()
    try:
        yield {"server": server, "url": server.url, "admin": admin, "write": writer}
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path):
    """``browser(base_url, (width, height))``: a fresh headless Chromium (own profile); quit after the test."""
    opened: list[Browser] = []

    def open_browser(base_url: str, size: tuple[int, int] = WIDE) -> Browser:
        b = Browser(make_driver(tmp_path / f"profile{len(opened)}", *size), tmp_path, base_url)
        opened.append(b)
        return b

    yield open_browser
    for b in opened:
        b.quit()


def render_count(b: Browser) -> int:
    return int(b.attr("#recs", "data-render") or 0)


def wait_render(b: Browser, after: int, what: str) -> None:
    b.wait(lambda: render_count(b) > after and b.attr("#recs", "aria-busy") == "false", message=what)


def history_items(b: Browser) -> list[str]:
    return [e.get_attribute("data-item") for e in b.find_all('[data-testid="history-item"]')]


def list_box(b: Browser) -> dict:
    return b.driver.execute_script(
        "const r = document.getElementById('recs').getBoundingClientRect();"
        "const rows = Array.from(document.querySelectorAll('#recs > li')).map(li => li.getBoundingClientRect());"
        "return {top: r.top + window.scrollY, height: r.height, rows: rows.map(x => [x.top + window.scrollY, x.height])};")


# ---------------------------------------------------------------------------------------------- the page
def test_a_new_user_clicks_three_items_and_sees_the_list_change(site, browser):
    b = browser(site["url"])
    b.get("/?key=" + site["write"])
    b.wait(lambda: len(b.rec_items()) == 10, message="the first list")
    assert "key=" not in b.driver.current_url, "the key stays out of the address bar"
    user = b.text('[data-testid="current-user"]')
    assert user.startswith("anon-") and len(user) == len("anon-") + 16
    assert b.visible("#history-empty") and "not personalised" in b.text("#recs-meta")
    assert not b.visible("#dashboard-link"), "a write key is not an admin key"
    initial, box = b.rec_items(), list_box(b)
    b.screenshot("page-new-user")

    clicked = []
    for n in range(3):
        item, before = b.rec_items()[0], render_count(b)
        b.find(f'[data-testid="rec-item"][data-item="{item}"] [data-testid="rec-open"]').click()
        wait_render(b, before, f"the list after click {n + 1}")
        clicked.append(item)
        b.wait(lambda want=n + 1: len(history_items(b)) == want, message="the history to grow")
        assert item not in b.rec_items(), "a clicked item leaves the list"
        assert list_box(b) == box, "the list re-ranks in place: no layout shift"
    assert sorted(history_items(b)) == sorted(clicked)
    assert b.rec_items() != initial and len(b.rec_items()) == 10
    assert "not personalised" not in b.text("#recs-meta")
    assert b.find_all('[data-testid="because"]'), "explanations name the history items that drove them"
    # the last clicked item is open: its text, its nearest items, and this user among who chose it
    b.wait(lambda: b.attr("#item-panel", "data-item") == clicked[-1], message="the item panel")
    b.wait(lambda: user in [e.text for e in b.find_all('[data-testid="item-user"]')], message="who chose it")
    assert b.text('[data-testid="item-text"]') and len(b.find_all('[data-testid="similar-item"]')) == 8

    liked, before = b.rec_items()[1], render_count(b)
    b.find(f'[data-testid="rec-item"][data-item="{liked}"] [data-testid="rec-like"]').click()
    wait_render(b, before, "the list after a like")
    b.wait(lambda: liked in history_items(b), message="the liked item in the history")
    assert "like" in b.find(f'[data-testid="history-item"][data-item="{liked}"]').text

    dismissed, before = b.rec_items()[0], render_count(b)
    b.find(f'[data-testid="rec-item"][data-item="{dismissed}"] [data-testid="rec-dismiss"]').click()
    wait_render(b, before, "the list after a dismiss")
    assert dismissed not in b.rec_items() and dismissed not in history_items(b)
    assert "Dismissed: 1 item" in b.text("#dismissed-line")
    assert list_box(b) == box
    b.screenshot("page-after-feedback", full_page=True)
    b.assert_no_console_errors()


def test_a_query_changes_the_list_and_no_query_shows_the_history_alone(site, browser):
    b = browser(site["url"])
    b.get("/?key=" + site["write"] + "&user=3")
    b.wait(lambda: len(b.rec_items()) == 10 and b.text('[data-testid="current-user"]') == "3", message="user 3")
    assert b.text("#user-known") == "known user" and len(history_items(b)) > 0
    history_alone = b.rec_items()

    before = render_count(b)
    b.fill("#query", "cooking recipes with dumplings and noodles")
    b.find("#query-submit").click()
    wait_render(b, before, "the list for the query")
    fused = b.rec_items()
    assert fused != history_alone
    assert "cooking recipes with dumplings and noodles" in b.text("#recs-meta")
    words = {e.text for e in b.find_all('[data-testid="query-word"]')}
    assert words and words <= {"cooking", "recipes", "with", "dumplings", "and", "noodles"}, words
    b.screenshot("page-query")

    before = render_count(b)
    b.find("#query-clear").click()
    wait_render(b, before, "the list without the query")
    assert b.rec_items() == history_alone and b.find("#query").get_attribute("value") == ""
    assert not b.find_all('[data-testid="query-word"]')
    b.assert_no_console_errors()


def test_the_keyboard_reaches_the_query_box_and_enter_submits(site, browser):
    b = browser(site["url"])
    b.get("/?key=" + site["write"] + "&user=4")
    b.wait(lambda: len(b.rec_items()) == 10, message="the list")
    before = render_count(b)
    for _ in range(40):
        ActionChains(b.driver).send_keys(Keys.TAB).perform()
        if b.driver.switch_to.active_element.get_attribute("id") == "query":
            break
    active = b.driver.switch_to.active_element
    assert active.get_attribute("id") == "query", "Tab never reached the query box"
    outline = b.driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused box shows a focus style"
    active.send_keys("space starship adventure")
    active.send_keys(Keys.ENTER)
    wait_render(b, before, "the list after Enter")
    assert b.attr("#recs", "data-query") == "space starship adventure"
    b.screenshot("page-keyboard")
    b.assert_no_console_errors()


# ---------------------------------------------------------------------------------------------- the dashboard
def test_an_admin_adds_an_item_and_finds_it_in_a_users_recommendations(site, browser):
    server = site["server"]
    with server.client(site["admin"]) as api:
        top = api.get("/v1/users/10/recommendations", params={"k": 10}).json()["items"][0]["item"]
    row = _models.data().item_table().filter(pl.col("item_id") == top).row(0, named=True)  # its text: title, categories, ...
    new = "new-" + secrets.token_hex(4)

    b = browser(site["url"])
    b.get("/dashboard?key=" + site["admin"] + "#catalogue")
    b.wait(lambda: b.visible('[data-testid="item-form"]'), message="the catalogue form")
    b.fill("#item-id", new)
    b.fill("#item-title", row["title"] + " Returns")
    b.fill("#item-categories", row["categories"])
    b.fill("#item-description", row["description"])
    b.find("#item-save").click()  # the model's template also reads the year: refused, and the form says why
    b.wait(lambda: "year" in b.text('[data-testid="item-error"]'), message="the missing field named")
    assert b.text('[data-testid="item-error"]').startswith("422: ")
    expected = [e for e in b.read_console() if e["level"] == "SEVERE"]
    assert len(expected) == 1 and f"/v1/items/{new} " in expected[0]["message"] and "422" in \
        expected[0]["message"], expected
    b.console.clear()  # the one console error this step expects (the browser logs every 4xx response)
    b.fill("#item-more", f"year: {row['year']}")
    b.find("#item-save").click()
    b.wait(lambda: b.text('[data-testid="item-result"]').startswith("Added " + new), message="the item added")
    b.wait(lambda: top in [e.get_attribute("data-item") for e in b.find_all('[data-testid="neighbour"]')],
           message="its nearest items")
    b.wait(lambda: b.find_all('[data-testid="audience-user"]'), message="its audience")
    assert not b.visible('[data-testid="item-error"]')
    b.screenshot("dashboard-catalogue")
    b.assert_no_console_errors()

    user = b.find('[data-testid="audience-user"]').text
    b.find('[data-testid="audience-user"]').click()  # a link to the recommendation page as that user
    b.wait(lambda: b.text('[data-testid="current-user"]') == user and b.rec_items(), message="that user's page")
    assert new in b.rec_items(), f"{new} in the recommendations of {user}"
    assert b.visible("#dashboard-link"), "an admin key links the dashboard"
    b.screenshot("page-new-item")
    b.assert_no_console_errors()


def test_the_live_and_reports_tabs_draw_their_charts(site, browser):
    b = browser(site["url"])
    b.get("/dashboard?key=" + site["admin"])
    b.wait(lambda: b.text('[data-testid="tile-version"]') == "v000001", message="the live tiles")
    assert int(b.text('[data-testid="tile-items"]').replace(",", "")) >= 150
    b.wait(lambda: b.find_all("#chart-requests svg path.line"), message="the requests chart")
    assert b.find_all('[data-testid="live-routes"] tbody tr[data-route]')
    b.screenshot("dashboard-live")

    b.find('.tabs a[data-tab="reports"]').click()
    b.wait(lambda: len(b.find_all('[data-testid="report-list"] tr[data-report]')) == 2, message="the report list")
    kinds = {r.get_attribute("data-report"): r.find_elements("css selector", "td")[1].text
             for r in b.find_all('[data-testid="report-list"] tr[data-report]')}
    assert kinds == {"ease.json": "evaluate", "ope.json": "ope"}
    b.find('[data-report="ope.json"] button').click()
    b.wait(lambda: b.attr('[data-testid="report-view"]', "data-report") == "ope.json", message="the ope report")
    assert len(b.find_all("#report-ope g.bar")) == 5 + 5, "estimates and the on-policy truth per estimator"
    assert len(b.find_all("#report-ope path.errorbar")) == 5, "a 95% interval per estimator"
    b.screenshot("dashboard-report-ope")
    b.find('[data-report="ease.json"] button').click()
    b.wait(lambda: b.attr('[data-testid="report-view"]', "data-report") == "ease.json", message="the ease report")
    assert len(b.find_all("#report-metrics g.bar")) == 3
    b.assert_no_console_errors()


def test_an_experiments_readout_appears_after_simulated_traffic(site, browser):
    b = browser(site["url"])
    b.get("/dashboard?key=" + site["admin"] + "#experiments")
    b.wait(lambda: b.visible('[data-testid="experiment-form"]'), message="the experiment form")
    b.fill("#exp-name", "greedy-vs-uniform")
    Select(b.find("#arm0-policy")).select_by_value("greedy")
    Select(b.find("#arm1-policy")).select_by_value("uniform")
    b.find("#exp-start").click()
    b.wait(lambda: b.find_all('[data-testid="experiment-list"] tr[data-experiment="greedy-vs-uniform"]'),
           message="the experiment listed")
    b.wait(lambda: b.attr('[data-testid="readout"]', "data-experiment") == "greedy-vs-uniform", message="readout")

    # simulated traffic: users in arm A click the top item 3 times in 4, users in arm B once in 10
    server, arms = site["server"], {}
    with server.client(site["write"]) as api:
        events = []
        for n, user in enumerate(str(u) for u in range(100, 200)):
            slate = api.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
            arms[slate["arm"]] = arms.get(slate["arm"], 0) + 1
            if (slate["arm"] == "A" and n % 4) or (slate["arm"] == "B" and n % 10 == 0):
                events.append({"event_id": secrets.token_hex(16), "type": "click", "user": user,
                               "item": slate["items"][0]["item"], "timestamp": time.time(),
                               "recommendation_id": slate["recommendation_id"], "position": 0})
        assert api.post("/v1/feedback", json={"events": events}).status_code == 200
    assert set(arms) == {"A", "B"} and min(arms.values()) > 20, arms

    b.find("#readout-refresh").click()
    b.wait(lambda: all(int(r.find_elements("css selector", "td")[4].text.replace(",", "")) > 0
                       for r in b.find_all('[data-testid="readout-arms"] tr[data-arm]')), message="slates per arm")
    assert len(b.find_all('[data-testid="readout-arms"] tr[data-arm]')) == 2
    b.wait(lambda: "Significant difference" in b.text('[data-testid="readout-test"]'), message="the test")
    assert "two-proportion z-test" in b.text('[data-testid="readout-test"]')
    assert {r.get_attribute("data-target") for r in b.find_all('[data-testid="readout-ope"] tr[data-target]')} == \
        {"A", "B"}
    assert len(b.find_all("#chart-readout path.errorbar")) == 2
    b.screenshot("dashboard-experiment", full_page=True)

    b.find('.tabs a[data-tab="online"]').click()
    b.wait(lambda: b.find_all("#chart-ctr svg path.line"), message="the online CTR chart")
    totals = b.find_all('[data-testid="online-totals"] tbody tr')
    assert {r.find_elements("css selector", "td")[2].text for r in totals} >= {"A", "B"}
    b.screenshot("dashboard-online")

    b.find('.tabs a[data-tab="experiments"]').click()
    b.wait(lambda: b.visible("#readout-stop"), message="the stop button")
    b.find("#readout-stop").click()
    b.wait(lambda: "stopped" in b.text('[data-testid="experiment-list"] tr[data-experiment="greedy-vs-uniform"]'),
           message="the experiment stopped")
    b.assert_no_console_errors()


def test_both_pages_fit_390_pixels_without_horizontal_scroll(site, browser):
    b = browser(site["url"], NARROW)
    b.get("/?key=" + site["write"] + "&user=6")
    b.wait(lambda: len(b.rec_items()) == 10, message="the list")
    before = render_count(b)
    b.fill("#query", "a story about wildlife")
    b.find("#query-submit").click()
    wait_render(b, before, "the query")
    before = render_count(b)
    b.find('[data-testid="rec-item"] [data-testid="rec-open"]').click()
    wait_render(b, before, "the list after a click")
    b.wait(lambda: b.attr("#item-panel", "data-item"), message="an item open")
    assert b.no_horizontal_scroll(), "the recommendation page scrolls sideways at 390 px"
    b.screenshot("page-390")
    b.get("/dashboard?key=" + site["admin"])
    b.wait(lambda: b.text('[data-testid="tile-version"]') == "v000001", message="the dashboard")
    for tab in ("live", "online", "experiments", "catalogue", "models", "reports"):
        b.find(f'.tabs a[data-tab="{tab}"]').click()
        b.wait(lambda tab=tab: b.visible(f'[data-testid="section-{tab}"]'), message=tab)
        assert b.no_horizontal_scroll(), f"the dashboard's {tab} tab scrolls sideways at 390 px"
    b.screenshot("dashboard-390")
    b.assert_no_console_errors()


# ---------------------------------------------------------------------------------------------- models
def test_a_rollout_and_a_rollback_from_the_dashboard(bundles, browser, tmp_path):
    registry = _models.registry(bundles["v1"], tmp_path / "registry")
    corrupt = _models.corrupt_copy(bundles["v1"], tmp_path / "corrupt")
    candidate = tmp_path / "candidate"
    shutil.copytree(bundles["v2"], candidate)
    store = f"sqlite:///{tmp_path}/events.db"
    admin = create_key(store, "admin")
    server = Server(registry, store, tmp_path / "server.log").start()
    try:
        b = browser(server.url)
        b.get("/dashboard?key=" + admin + "#models")
        serving = '[data-testid="models-serving"]'
        b.wait(lambda: b.attr(serving, "data-serving") == "v000001", message="v000001 serving")
        assert len(b.find_all('[data-testid="model-versions"] tr[data-version]')) == 1

        b.fill("#bundle-path", str(corrupt))  # refused with the reason; v000001 keeps serving
        b.find("#publish").click()
        b.wait(lambda: b.visible('[data-testid="models-refused"]'), message="the refusal")
        refusal = b.text('[data-testid="models-refused"]')
        assert refusal.startswith("Refused: 422: ") and len(refusal) > len("Refused: 422: ") + 10, refusal
        expected = [e for e in b.read_console() if e["level"] == "SEVERE"]
        assert len(expected) == 1 and "/v1/admin/models" in expected[0]["message"] and "422" in \
            expected[0]["message"], expected
        b.console.clear()  # the one console error that this step expects (the browser logs every 4xx)
        b.screenshot("dashboard-models-refused")

        b.fill("#bundle-path", str(candidate))
        b.find("#publish").click()
        b.wait(lambda: b.attr(serving, "data-serving") == "v000002", message="v000002 serving")
        assert not b.visible('[data-testid="models-refused"]')
        assert "Published and now serving v000002" in b.text('[data-testid="models-status"]')
        assert len(b.find_all('[data-testid="model-versions"] tr[data-version]')) == 2
        with server.client(admin) as api:
            assert api.get("/readyz").json()["n_items"] < 150
        b.screenshot("dashboard-models-published")

        b.find('[data-testid="rollback"]').click()
        b.wait(lambda: b.attr(serving, "data-serving") == "v000001", message="rolled back to v000001")
        assert "Now serving v000001" in b.text('[data-testid="models-status"]')
        with server.client(admin) as api:
            assert api.get("/readyz").json()["n_items"] == 150
        b.find('tr[data-version="v000002"] [data-testid="activate"]').click()
        b.wait(lambda: b.attr(serving, "data-serving") == "v000002", message="v000002 activated")
        b.screenshot("dashboard-models")
        b.assert_no_console_errors()
    finally:
        server.stop()


def test_screenshots_are_copied_where_the_readme_wants_them(site, browser, tmp_path, monkeypatch):
    target = tmp_path / "readme-images"
    monkeypatch.setenv("LLM4REC_SCREENSHOTS", str(target))
    b = browser(site["url"])
    b.get("/?key=" + site["write"])
    b.wait(lambda: b.rec_items(), message="the list")
    saved = b.screenshot("page-copied")
    assert saved.parent == tmp_path and (target / "page-copied.png").read_bytes()[:4] == b"\x89PNG"
    b.assert_no_console_errors()


def test_the_pages_are_files_of_the_package_and_need_no_network(site):
    import httpx

    for path in ("/", "/dashboard", "/static/app.css", "/static/api.js", "/static/charts.js", "/static/page.js",
                 "/static/dashboard.js"):
        r = httpx.get(site["url"] + path, timeout=10)
        assert r.status_code == 200, path
        assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in r.text, path
