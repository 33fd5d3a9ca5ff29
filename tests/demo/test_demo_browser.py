"""The demo page in headless Chromium: a person sees a recommendation, clicks Override, fills the reason modal,
and sees the message change — while the click went to the bot signed, exactly as Slack sends it, and the
answer is in SQLite. Skipped only when Chromium or its driver is not installed (``.ci/run`` installs them)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from demo_testing import rows

from bot.demo.runner import Demo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER, reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    from selenium.webdriver.common.selenium_manager import SeleniumManager  # noqa: PLC0415

    def no_downloads(*_: object, **__: object) -> dict[str, str]:
        raise AssertionError("Selenium Manager was invoked (it may download browsers or drivers)")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,950",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_override_through_the_page_reaches_the_bot_and_sqlite(
    manual_demo: tuple[Demo, str], browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.select import Select  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    demo, url = manual_demo
    db = demo.options.db
    driver = browser
    wait = WebDriverWait(driver, 20)  # type: ignore[arg-type]
    driver.get(url)  # type: ignore[attr-defined]

    # A recommendation rendered from its Block Kit, with the buttons.
    override = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, '#ch-C0INCIDENT .msg button[data-action-id="npo_override"]'))
    )
    message = override.find_element(By.XPATH, "./ancestor::div[contains(@class, 'msg')]")
    assert "disk_failure" in message.text and "r12-n04" in message.text
    assert "Override (1)" not in message.text

    # Override opens the reason modal (the bot's views.open).
    override.click()
    modal = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#overlay .modal")))
    assert "Override" in modal.text and "Reason" in modal.text

    # Submitting without a reason: the bot's validation error shows in the modal; nothing is stored.
    modal.find_element(By.CSS_SELECTOR, ".modal-submit").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#overlay .error"), "Please pick a reason"))
    assert rows(db, "SELECT COUNT(*) FROM feedback") == [(0,)]

    modal = driver.find_element(By.CSS_SELECTOR, "#overlay .modal")  # type: ignore[attr-defined]
    Select(modal.find_element(By.CSS_SELECTOR, 'select[data-action-id="reason"]')).select_by_value("false_positive")
    modal.find_element(By.CSS_SELECTOR, 'textarea[data-action-id="details"]').send_keys("SMART data is clean")
    modal.find_element(By.CSS_SELECTOR, ".modal-submit").click()
    wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "#overlay .modal")))

    # The message changes (chat.update by the delivery worker) and the answer is in SQLite — which also shows the
    # stand-in's signature passed the bot's check (an unsigned request gets 401 and stores nothing).
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#ch-C0INCIDENT .msg"), "Override (1)"))
    text = driver.find_element(By.CSS_SELECTOR, "#ch-C0INCIDENT .msg").text  # type: ignore[attr-defined]
    assert "override by @you" in text and "False positive: SMART data is clean" in text
    assert rows(db, "SELECT prediction_id, operator, kind, reason FROM feedback") == [
        ("demo-test-1", "U0YOU", "override", "False positive: SMART data is clean")
    ]
    # The learning panel shows the new alignment loss.
    wait.until(ec.text_to_be_present_in_element((By.ID, "l-align"), "1.000"))

    shot = tmp_path / "demo.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    target = os.environ.get("NPO_DEMO_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_after_cancelling_the_reason_modal_override_can_be_clicked_again(
    manual_demo: tuple[Demo, str], browser: object
) -> None:
    """Cancel sends nothing, so the message does not change; the Override button stayed disabled, and the person
    could not override that recommendation until something else edited the message."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    demo, url = manual_demo
    driver = browser
    wait = WebDriverWait(driver, 20)  # type: ignore[arg-type]
    driver.get(url)  # type: ignore[attr-defined]
    button = '#ch-C0INCIDENT .msg button[data-action-id="npo_override"]'
    modal = "#overlay .modal"
    for _ in range(2):
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, button))).click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, modal)))
        driver.find_element(By.CSS_SELECTOR, "#overlay .modal-close").click()  # type: ignore[attr-defined]
        wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, modal)))
    assert rows(demo.options.db, "SELECT COUNT(*) FROM feedback") == [(0,)]


@pytest.mark.parametrize("page", ["/ui/", "/"])
def test_another_site_cannot_frame_the_page(manual_demo: tuple[Demo, str], browser: object, page: str) -> None:
    """Clickjacking: a web site on another origin framed the page (invisible, under a button of its own), so the
    person's click on that site was a click on Like or Override, signed and stored as theirs — the request came
    from the page itself, with its own Origin. Both pages now forbid being framed by anyone: the frame stays
    empty (Chromium's error page) and nothing can be clicked in it."""
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    demo, url = manual_demo
    target = url.removesuffix("/ui/") + page
    other_site = f'<!doctype html><p>win a prize</p><iframe id="f" src="{target}" width="900" height="600"></iframe>'

    class OtherSite(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = other_site.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OtherSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver = browser
        driver.get(f"http://localhost:{server.server_address[1]}/")  # type: ignore[attr-defined]
        driver.switch_to.frame("f")  # type: ignore[attr-defined]
        wait = WebDriverWait(driver, 20)  # type: ignore[arg-type]
        loaded = "return document.readyState === 'complete' && document.URL !== 'about:blank' && document.URL"
        framed = wait.until(lambda d: d.execute_script(loaded))  # type: ignore[attr-defined]
        assert not framed.startswith(target), framed  # the browser refused to show the page in the frame
        assert driver.execute_script("return document.querySelectorAll('button, form').length") == 0  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
    assert rows(demo.options.db, "SELECT COUNT(*) FROM feedback") == [(0,)]
