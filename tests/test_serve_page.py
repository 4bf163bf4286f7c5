"""The page of asr-s2s serve in a real headless browser (Debian's chromium and chromium-driver, driven by Selenium):
upload a file, watch the transcript arrive, download its srt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
import srt

from serve_support import live_server

from asr_s2s.tokenizer import normalize_text

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def server(robust_package):
    with live_server("--model", robust_package, "--beam-size", "1") as live:
        yield live


@pytest.fixture
def browser(tmp_path):
    """Headless chromium through /usr/bin/chromedriver. Selenium Manager is never asked for anything (the driver's
    path is given), so nothing is downloaded; a machine without them fails here, saying what to install."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: the page test needs Debian's chromium and chromium-driver; "
                    "run bash tools/setup.sh --dev (it installs them)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900",
                 f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_transcribes_an_upload_and_offers_its_srt(server, browser, fixture_utterances, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    utterance = fixture_utterances[0]
    upload = tmp_path / "cat.flac"
    shutil.copyfile(utterance.audio, upload)
    browser.get(server.url + "/")
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(lambda d: "@sha256:" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(upload))
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda d: status.get_attribute("data-done") == "true" or "error" in (status.get_attribute("class") or ""))
    assert status.get_attribute("data-done") == "true", status.text
    assert status.text.startswith("Done:")
    assert browser.find_element(By.ID, "transcript").text == normalize_text(utterance.text)
    segments = browser.find_elements(By.CSS_SELECTOR, "#segments li")
    assert len(segments) == 1 and segments[0].text.startswith("00:00.00 → 00:01.")
    assert segments[0].text.endswith(normalize_text(utterance.text))

    link = browser.find_element(By.ID, "download-srt")
    assert link.is_displayed() and link.get_attribute("download") == "cat.srt"
    downloaded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done, e => done('fetch failed: ' + e));",
        link.get_attribute("href"))
    with open(upload, "rb") as audio:
        served = requests.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("cat.flac", audio)},
                               data={"response_format": "srt"}, timeout=60).text
    assert downloaded == served
    (cue,) = srt.parse(downloaded)
    assert cue.content == normalize_text(utterance.text) and cue.start.total_seconds() == 0

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
