"""The chat page (tools/chat_page.py) in a real browser against a real TorchServe.

Headless Debian Chromium driven by Selenium through chromedriver: the test types into the page's
textbox, presses Enter and waits for the bot's message in the DOM. Skipped, with the reason, when
the browser, its driver or the page's extra (gradio) is not installed, except under CI=true:
`.ci/run` installs all three, so there they must run.
Set UI_SCREENSHOT=path to keep a screenshot of the conversation (docs/chat_page.png is one).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness.launcher import REPO, free_ports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI") == "true"  # .ci/run installs everything: there a missing piece fails, never skips
needs_gradio = pytest.mark.skipif(not IN_CI and importlib.util.find_spec("gradio") is None,
                                  reason="needs the chat page's extra: pip install -r requirements-ui.txt")
needs_browser = pytest.mark.skipif(
    not IN_CI and (CHROMIUM is None or CHROMEDRIVER is None or importlib.util.find_spec("selenium") is None),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium")
TIMEOUT_S = 30


def start_page(inference_url: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """python -m tools.chat_page on a free loopback port; (process, page URL) once it answers."""
    port = free_ports(1)[0]
    log = open(tmp_path / f"chat_page_{port}.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen([sys.executable, "-m", "tools.chat_page", "--url", inference_url, "--port", str(port)],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the chat page did not start: {(tmp_path / f'chat_page_{port}.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(torchserve, tmp_path_factory):
    process, url = start_page(torchserve.url("inference"), tmp_path_factory.mktemp("page"))
    yield url
    process.terminate()
    process.wait(timeout=30)


def messages(driver, role: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [m.text for m in driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{role}"]')]


def say(driver, text: str) -> str:
    """Type `text` into the page, press Enter, and return the bot's message that answers it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(messages(driver, "bot"))
    box = WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, "textarea"))
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: len(messages(d, "bot")) > before and messages(d, "bot")[-1])
    time.sleep(0.3)  # the message's text may still be streaming in
    return messages(driver, "bot")[-1]


@needs_gradio
def test_controls_send_only_the_options_that_are_set():
    from model.schema import OPTIONS
    from tools.chat_page import UNSET, fields
    assert fields([UNSET[name] for name in OPTIONS]) == {}
    values = {**UNSET, "beam_size": 4.0, "num_replies": 2.0, "seed": 7.0}
    assert fields([values[name] for name in OPTIONS]) == {"beam_size": 4, "num_replies": 2, "seed": 7}


@needs_gradio
def test_the_page_says_plainly_when_the_model_is_not_loaded_or_no_worker_is_ready():
    from model.schema import Reply
    from tools.chat_page import render

    missing = render(Reply.from_body({"code": 404, "type": "ModelNotFoundException",
                                      "message": "Model not found: my_s2s"}, 404), "my_s2s")
    assert missing.startswith("**The model my_s2s is not loaded on the server**") and "make serve" in missing
    busy = render(Reply.from_body({"code": 503, "type": "ServiceUnavailableException", "message": "no worker"}, 503),
                  "my_s2s")
    assert busy.startswith("**The server has no worker ready for my_s2s**")
    replies = render(Reply.from_body({"reply": "hi", "score": -1.0, "unknown_words": ["zorblax"], "replies": [
        {"reply": "hi", "score": -1.0}, {"reply": "hello", "score": -1.5}]}, 200), "m")
    assert replies == "hi  (-1.000)\n\nhello  (-1.500)\n\n*unknown words dropped: zorblax*"


@needs_gradio
@needs_browser
def test_the_page_shows_the_reply_curl_gets_and_the_servers_4xx_message(browser, page, torchserve):
    curl = requests.post(torchserve.predictions_url, data=b"hello there !", headers={"Content-Type": "text/plain"},
                         timeout=30).text.rstrip("\n")
    browser.get(page)
    assert say(browser, "hello there !") == curl
    rejected = requests.post(torchserve.predictions_url, json={"text": "zorblax quuxly"}, timeout=30).json()
    shown = say(browser, "zorblax quuxly")
    assert shown.startswith("Error 422 NoKnownWords: " + rejected["message"])
    assert "zorblax, quuxly" in shown
    dropped = say(browser, "how are you zorblax ?")
    assert dropped.splitlines()[-1] == "unknown words dropped: zorblax"
    assert messages(browser, "user")[-3:] == ["hello there !", "zorblax quuxly", "how are you zorblax ?"]
    if os.environ.get("UI_SCREENSHOT"):
        browser.save_screenshot(os.environ["UI_SCREENSHOT"])


@needs_gradio
@needs_browser
def test_the_decoding_controls_are_on_the_page(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page)
    time.sleep(1)
    browser.find_element(By.XPATH, "//button[contains(., 'Decoding options')]").click()
    time.sleep(0.5)
    text = browser.find_element(By.TAG_NAME, "body").text
    from model.schema import OPTIONS
    assert all(name in text for name in OPTIONS), text


@needs_gradio
@needs_browser
@pytest.mark.server
def test_a_page_whose_server_is_down_says_so(browser, tmp_path):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    process, url = start_page(dead, tmp_path)
    try:
        browser.get(url)
        shown = say(browser, "hello")
        assert shown.startswith(f"The server is not reachable at {dead}/predictions/my_s2s") and "make serve" in shown
    finally:
        process.terminate()
        process.wait(timeout=30)
