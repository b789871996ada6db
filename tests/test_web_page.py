"""The draw-a-digit page in a real headless Chromium: draw a stroke, get a prediction, check the bars.

The reference: the same canvas, sent straight to the API, must give the probabilities the bars show.
Skips where Chromium, chromedriver or Selenium is absent (`.ci/run` installs Debian's chromium).
"""

from __future__ import annotations

import base64
import shutil
import tempfile

import httpx
import pytest
from helpers import run_cli

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """Ten classes, so ten bars: scikit-learn's 8x8 digits, briefly trained."""
    root = tmp_path_factory.mktemp("digits")
    code = run_cli("train", "--dataset", "digits", "--n_epochs", "3", "--batch_size", "64", "--hidden_sizes",
                   "64,32", "--runs_dir", root / "runs", "--run_name", "digits", "--model_fn",
                   root / "digits.safetensors", "--verbose", "0")
    assert code == 0
    return root / "digits.safetensors"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ptflow-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=900,700", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def bars(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#bars .bar')].map(b => ({name: b.dataset.class, "
        "p: b.dataset.p === '' ? null : parseFloat(b.dataset.p), top: b.classList.contains('top'), "
        "width: parseFloat(b.querySelector('.fill').style.width), text: b.querySelector('.value').textContent}))")


def ink_pixels(driver) -> int:
    return driver.execute_script(
        "const c = document.getElementById('pad'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height)"
        ".data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n;")


def wait_for(driver, condition, timeout=15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def draw_seven(driver) -> None:
    """One stroke with the mouse (pointer events): across the top, then down to the bottom left."""
    from selenium.webdriver.common.action_chains import ActionChains

    pad = driver.find_element("id", "pad")
    actions = ActionChains(driver, duration=10)
    actions.move_to_element_with_offset(pad, -80, -90).click_and_hold()  # offsets from the canvas centre
    for _ in range(8):
        actions.move_by_offset(20, 0)
    for _ in range(9):
        actions.move_by_offset(-9, 20)
    actions.release().perform()


def test_draw_a_digit_get_ten_bars_matching_the_api(browser, serve_process, digits_model):
    with serve_process(digits_model) as url:
        browser.get(url + "/")
        wait_for(browser, lambda d: len(bars(d)) == 10)
        assert "digits" in browser.find_element("id", "model").text  # the model's name
        assert ink_pixels(browser) == 0

        draw_seven(browser)  # a prediction follows the end of the stroke, no button needed
        wait_for(browser, lambda d: "latency" in d.find_element("id", "status").text)
        assert ink_pixels(browser) > 2000
        shown = bars(browser)
        assert [b["name"] for b in shown] == [str(i) for i in range(10)]
        assert sum(b["p"] for b in shown) == pytest.approx(1, abs=1e-4)
        top = max(shown, key=lambda b: b["p"])
        assert [b["name"] for b in shown if b["top"]] == [top["name"]]  # exactly the top bar highlighted
        assert browser.find_element("id", "answer").text == top["name"]
        for b in shown:
            assert b["width"] == pytest.approx(100 * b["p"], abs=0.06) and b["text"] == f"{b['p']:.3f}"
        assert float(browser.find_element("id", "status").text.split()[1]) > 0  # "latency 12.3 ms"

        # The reference: the canvas as the page sent it, posted to the API directly.
        data_url = browser.execute_script("return document.getElementById('pad').toDataURL('image/png')")
        api = httpx.post(url + "/v1/predict", json={"images": [data_url]}).json()["predictions"][0]
        assert {b["name"]: b["p"] for b in shown} == api["probabilities"]

        browser.find_element("id", "clear").click()
        assert ink_pixels(browser) == 0 and all(b["p"] is None and not b["top"] for b in bars(browser))
        browser.find_element("id", "predict").click()
        assert "draw a digit first" in browser.find_element("id", "status").text

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # no Content-Security-Policy violation, no failed request


def test_upload_an_image_file(browser, serve_process, digits_model, tmp_path):
    from PIL import Image, ImageDraw

    photo = Image.new("L", (120, 160), 235)  # a dark "1" on light paper, as a phone would take it
    ImageDraw.Draw(photo).line([(60, 20), (60, 140)], fill=20, width=14)
    path = tmp_path / "one.png"
    photo.save(path)
    with serve_process(digits_model) as url:
        browser.get(url + "/")
        wait_for(browser, lambda d: len(bars(d)) == 10)
        browser.find_element("id", "upload").send_keys(str(path))
        wait_for(browser, lambda d: "latency" in d.find_element("id", "status").text)
        shown = {b["name"]: b["p"] for b in bars(browser)}
        encoded = base64.b64encode(path.read_bytes()).decode()
        api = httpx.post(url + "/v1/predict", json={"images": [encoded]}).json()["predictions"][0]
        assert shown == api["probabilities"]  # the file itself was sent, preprocessed as `ptflow predict` does
        assert ink_pixels(browser) > 0  # and shown on the pad


def test_the_page_asks_for_the_api_key_when_one_is_required(browser, serve_process, digits_model):
    with serve_process(digits_model, env={"PTFLOW_API_KEY": "page-key"}) as url:
        browser.get(url + "/")
        wait_for(browser, lambda d: len(bars(d)) == 10)
        key = browser.find_element("id", "key")
        assert key.is_displayed()
        draw_seven(browser)
        wait_for(browser, lambda d: "401" in d.find_element("id", "status").text)
        key.send_keys("page-key")
        browser.find_element("id", "predict").click()
        wait_for(browser, lambda d: "latency" in d.find_element("id", "status").text)
        assert sum(b["p"] for b in bars(browser)) == pytest.approx(1, abs=1e-4)


def test_api_docs_work_offline_under_their_csp(browser, serve_process, digits_model):
    """/docs is Swagger UI from the installed package: every file from the server itself, no CSP violation."""
    with serve_process(digits_model) as url:
        headers = httpx.get(url + "/docs").headers
        assert "script-src 'self'" in headers["content-security-policy"] and "unsafe" not in headers[
            "content-security-policy"]
        browser.get_log("browser")  # drop what earlier tests left in the shared browser's log
        browser.get(url + "/docs")
        wait_for(browser, lambda d: d.execute_script("return document.querySelectorAll('.opblock').length") >= 6)
        paths = browser.execute_script(
            "return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.dataset.path)")
        assert {"/v1/predict", "/v1/predict/image", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(paths)

        # Try it out: GET /v1/model from the page, through the page's own CSP (connect-src 'self').
        block = browser.find_element("id", "operations-default-model_info_v1_model_get")
        block.find_element("css selector", ".opblock-summary").click()
        wait_for(browser, lambda d: block.find_elements("css selector", ".try-out__btn"))
        block.find_element("css selector", ".try-out__btn").click()
        block.find_element("css selector", ".execute").click()
        status = ".live-responses-table tbody .response-col_status"
        wait_for(browser, lambda d: block.find_elements("css selector", status))
        assert block.find_element("css selector", status).text.startswith("200")
        assert '"architecture": "mlp"' in block.find_element("css selector", ".live-responses-table pre").text

        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert loaded and all(name.startswith(url + "/") for name in loaded), loaded  # nothing from elsewhere
        assert {url + "/docs/swagger-ui-bundle.js", url + "/docs/swagger-ui.css", url + "/openapi.json"} <= set(loaded)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # no Content-Security-Policy violation, no failed request
