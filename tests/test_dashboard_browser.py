"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) through Selenium, against a real ``busgate web`` whose history the
test fills while the page is open, as the recorder would.

Checks: new messages appear live without a reload and are counted in the activity
charts' current bars at once (no request: the script counts what the stream brings), the
charts are re-read every ``chart_refresh`` seconds and no more often, a filter URL shows
only matching messages (live ones too), the package page works, hostile text stays text,
the phone layout has no horizontal scroll, first contentful paint < 1 s, and the console
has no errors. Screenshots (desktop and a 375 px phone) go to ``artifacts/`` at the repo root
(or ``$BUSGATE_ARTIFACTS``); their paths are printed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.history.store import SqliteHistory
from tests import dashboard_helpers as dh
from tests.conftest import IN_CI, REPO

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOW = "apt-get install chromium chromium-driver; pip install -e '.[test]' (selenium)"
#: Seconds a live message may take to show (poll 0.1 s; the machine is shared).
LIVE = 10


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true and {missing}; {HOW}")
        pytest.skip(f"{missing}; {HOW}")
    # the drivers are given by path: Selenium Manager must not look for (download) one
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def artifacts() -> Path:
    folder = Path(os.environ.get("BUSGATE_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shown(driver) -> list[int]:  # type: ignore[no-untyped-def]
    """The list's message ids, read in one script (the stream changes the list)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#messages li[data-id]'))"
        ".map(li => Number(li.getAttribute('data-id')))")


def wait_for(driver, what: str, condition, timeout: float = LIVE):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message=what)


def severe(driver) -> list[dict]:  # type: ignore[no-untyped-def]
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def charts(driver) -> list[dict]:  # type: ignore[no-untyped-def]
    """Each live chart's caption total and its bars' labels ("<time> <service>: <n>")."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('figure.chart[data-chart]')).map(f => ("
        "{total: Number(f.querySelector('.total').textContent),"
        " bars: Array.from(f.querySelectorAll('rect title')).map(t => t.textContent)}))")


def activity_reads(driver) -> int:  # type: ignore[no-untyped-def]
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/v2/activity')).length")


def bar(chart: dict, label: str) -> int:
    """The count of the bar labelled ``label`` (``<time> <service>``), 0 when none."""
    return next((int(b.rpartition(": ")[2]) for b in chart["bars"]
                 if b.rpartition(": ")[0] == label), 0)


def current_bar(span: int, bucket: int) -> str:
    """The label of the bar now falls in, for a chart of ``span`` seconds up to the end of
    this hour in bars of ``bucket`` seconds (as gateway.history.dashboard draws it)."""
    now = time.time()
    start = now // 3600 * 3600 + 3600 - span
    at = start + (now - start) // bucket * bucket
    return f"{dt.datetime.fromtimestamp(at, dt.UTC):%Y-%m-%d %H:%M}"


def clear_of_the_hour() -> None:
    """Wait past an hour's turn that is under 20 s away (a live message must fall in the
    hour the charts were drawn for)."""
    left = 3600 - time.time() % 3600
    if left < 20:
        time.sleep(left + 1)


def test_dashboard_live_filters_and_package_page_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser
    clear_of_the_hour()
    now = time.time()
    served = SqliteHistory(tmp_path / "history.sqlite")
    recorder = SqliteHistory(tmp_path / "history.sqlite")  # another connection writes
    dh.seed(recorder, 150, now - 60)  # a week of the adapters' real events
    hebcal = dh.samples()
    bug = next(b for t, b in hebcal if t.endswith("debbugs.bug.report"))
    upload = next(b for t, b in hebcal if t.endswith("dak.package.accept"))

    def live(number: int, package: str, kind: str = "bug", title: str = "") -> dict:
        if kind == "bug":
            body = {**bug, "package": package, "bug": 900000 + number,
                    "title": title or f"{package}: crashes on start"}
            return dh.envelope(number, "org.debian.dev.debbugs.bug.report", body, time.time(),
                               users=("pat",), packages=(package,))
        body = {**upload, "source": package, "version": f"1.{number}-1"}
        return dh.envelope(number, "org.debian.dev.dak.package.accept", body, time.time(),
                           packages=(package,))

    try:
        with dh.serve(served) as url:
            # -- the live page ------------------------------------------------------------
            driver.set_window_size(1280, 900)
            driver.get(url + "/")
            assert shown(driver) == list(range(150, 125, -1))
            paint = wait_for(driver, "a first contentful paint", lambda d: d.execute_script(
                "return performance.getEntriesByType('paint')"
                ".filter(e => e.name === 'first-contentful-paint').map(e => e.startTime)"))
            assert paint[0] < 1000, paint
            print(f"\nfirst contentful paint: {paint[0]:.0f} ms")
            wait_for(driver, "the stream opens",
                     lambda d: d.find_element(By.ID, "status").text == "live")
            driver.execute_script("window.notReloaded = true")
            drawn = charts(driver)
            assert len(drawn) == 2 and activity_reads(driver) == 0
            day_bar, week_bar = (current_bar(86400, 3600), current_bar(7 * 86400, 6 * 3600))
            hostile = "<img src=x onerror=alert(1)> & <script>alert(2)</script>"
            dh.add(recorder, live(151, "hebcal", title=hostile), live(152, "dpkg", "upload"))
            wait_for(driver, "live messages appear", lambda d: shown(d)[:2] == [152, 151])
            assert driver.execute_script("return window.notReloaded") is True
            # ...and counted in the charts' current bars, with no request for it
            wait_for(driver, "the charts count the live messages", lambda d: [
                c["total"] for c in charts(d)] == [c["total"] + 2 for c in drawn])
            counted = charts(driver)
            for before, after, label in zip(drawn, counted, (day_bar, week_bar), strict=True):
                for service in ("debbugs", "dak"):
                    assert bar(after, f"{label} {service}") == \
                        bar(before, f"{label} {service}") + 1, (label, service, after)
            assert activity_reads(driver) == 0
            assert len(shown(driver)) == 25  # the list keeps its length
            first = driver.find_element(By.CSS_SELECTOR, '#messages li[data-id="151"]')
            assert hostile in first.text  # shown as text...
            assert not first.find_elements(By.TAG_NAME, "img")  # ...not as HTML
            assert first.find_element(By.CSS_SELECTOR, "a.sum").get_attribute(
                "href").startswith("https://bugs.debian.org/")
            assert driver.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")
            desktop = artifacts() / "dashboard-desktop.png"
            driver.save_screenshot(str(desktop))

            # -- a filter URL, and live messages filtered too -----------------------------
            driver.get(url + "/?package=hebcal")
            before = shown(driver)
            assert 151 in before
            for number in before:
                item = driver.find_element(By.CSS_SELECTOR, f'#messages li[data-id="{number}"]')
                assert "hebcal" in [a.text for a in item.find_elements(By.CSS_SELECTOR,
                                                                        "a.pkg")]
            wait_for(driver, "the filtered stream opens",
                     lambda d: d.find_element(By.ID, "status").text == "live")
            dh.add(recorder, live(153, "dpkg"))
            dh.add(recorder, live(154, "hebcal", "upload"))
            wait_for(driver, "a matching live message appears", lambda d: 154 in shown(d))
            assert 153 not in shown(driver)  # stored before 154: it would be there by now
            assert shown(driver)[0] == 154
            assert driver.find_element(By.NAME, "package").get_attribute("value") == "hebcal"

            # -- the form builds the same shareable URL -----------------------------------
            driver.get(url + "/")
            box = driver.find_element(By.NAME, "category")
            box.send_keys("dak")
            box.submit()
            wait_for(driver, "the form's URL", lambda d: d.current_url.endswith("/?category=dak"))
            assert shown(driver) and all(
                driver.find_element(By.CSS_SELECTOR, f'li[data-id="{n}"] a.svc').text == "dak"
                for n in shown(driver))

            # -- the phone layout ---------------------------------------------------------
            driver.set_window_size(375, 812)
            driver.get(url + "/")
            wait_for(driver, "the phone page streams",
                     lambda d: d.find_element(By.ID, "status").text == "live")
            width = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], f"horizontal scroll on a phone: {width}"
            phone = artifacts() / "dashboard-phone.png"
            driver.save_screenshot(str(phone))

            # -- the package page ---------------------------------------------------------
            driver.set_window_size(1280, 900)
            driver.get(url + "/package/hebcal")
            items = driver.find_elements(By.CSS_SELECTOR, "ol.messages li[data-id]")
            numbers = {int(li.get_attribute("data-id")) for li in items}
            assert {151, 154} <= numbers and 153 not in numbers
            total = int(driver.find_element(By.ID, "total").text)
            assert total == len(items)
            assert "hebcal" in driver.title
            package = artifacts() / "dashboard-package.png"
            driver.save_screenshot(str(package))
            print(f"screenshots: {desktop} {phone} {package}")

            errors = severe(driver)
            assert not errors, errors
    finally:
        recorder.close()
        served.close()


def test_dashboard_charts_are_reread_at_the_configured_rate(browser, tmp_path):
    """A filtered page's stream does not carry every message its charts count: the
    periodic re-read (``chart_refresh``, here 1 s) adds the rest, and comes no faster."""
    driver = browser
    clear_of_the_hour()
    served = SqliteHistory(tmp_path / "history.sqlite")
    recorder = SqliteHistory(tmp_path / "history.sqlite")
    dh.seed(recorder, 40, time.time() - 60, span=86400)
    topic, body = next((t, b) for t, b in dh.samples() if t.endswith("dak.package.accept"))
    try:
        with dh.serve(served, chart_refresh=1.0) as url:
            driver.get(url + "/?package=no-such-package")
            from selenium.webdriver.common.by import By

            wait_for(driver, "the stream opens",
                     lambda d: d.find_element(By.ID, "status").text == "live")
            opened = time.monotonic()
            drawn = charts(driver)
            dh.add(recorder, dh.envelope(41, topic, {**body, "source": "other"}, time.time(),
                                         packages=("other",)))
            wait_for(driver, "a re-read counts a message the stream did not carry",
                     lambda d: [c["total"] for c in charts(d)] == [c["total"] + 1
                                                                   for c in drawn])
            time.sleep(max(0.0, 4.0 - (time.monotonic() - opened)))
            reads = activity_reads(driver)
            spent = time.monotonic() - opened
            assert 2 <= reads <= spent / 1.0 + 1, (reads, spent)  # one a second, no more
            assert not driver.find_elements(By.CSS_SELECTOR, "#messages li[data-id]")
            errors = severe(driver)
            assert not errors, errors
    finally:
        recorder.close()
        served.close()
