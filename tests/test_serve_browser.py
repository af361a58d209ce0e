"""The page of `mnist-edge serve` in a real browser: Debian's headless Chromium, driven by selenium.

Ten MNIST test digits are drawn on the canvas stroke by stroke (their skeletons, half with a mouse,
half with a finger), a photo goes through the file input and a frame through the (fake) camera;
the page's answers must be right, and screenshots are saved for a person to look at.
"""

import json
import os
import pathlib
import re

import numpy as np
import pytest

from conftest import require
from digit_photos import photo_of
from digit_strokes import strokes
from serve_process import ServeProcess, call_json, make_bundle

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-test-token"
CELL = 10  # canvas pixels per MNIST pixel: the pad is 280×280


@pytest.fixture(scope="module")
def trained_bundle(fixture_bundle, tmp_path_factory):
    return make_bundle(fixture_bundle, tmp_path_factory.mktemp("browser-bundle"))


@pytest.fixture(scope="module")
def camera_video(digits, tmp_path_factory):
    """A y4m video (what Chromium's fake camera plays) of a photographed test digit; returns (path, label)."""
    index = 21
    picture = photo_of(digits.x_test[index], np.random.default_rng(3), scale=6, canvas=(240, 320))
    path = tmp_path_factory.mktemp("camera") / "digit.y4m"
    height, width = picture.shape
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    frame = b"FRAME\n" + picture.tobytes() + chroma + chroma  # grey: the picture is the luma plane
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + frame * 3)
    return path, int(digits.y_test[index])


@pytest.fixture(scope="module")
def browser(camera_video, tmp_path_factory):
    require(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
            "needs Debian's chromium and chromium-driver (make system-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1100,900",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera_video[0]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, trained_bundle, tmp_path_factory):
    """The page of a server that needs a token, after the token was typed in once."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    token_file = tmp_path_factory.mktemp("browser-token") / "token"
    token_file.write_text(TOKEN)
    with ServeProcess(trained_bundle, "--token-file", str(token_file), "--self-check-images", "1000",
                      "--shadow-rate", "1") as server:
        browser.get(server.url + "/")
        form = browser.find_element(By.ID, "token-form")
        WebDriverWait(browser, 20).until(lambda _: form.is_displayed())
        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        form.submit()
        WebDriverWait(browser, 20).until(lambda _: "model_int8.tflite" in browser.find_element(By.ID, "model-line").text)
        yield browser
        assert "Traceback" not in server.log_text()


def answer(driver):
    """Wait for the page to finish its newest request; return the label it shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.ID, "status")
    # The state is read once, where the wait saw it: a later read could see the next request start.
    state = WebDriverWait(driver, 30).until(
        lambda _: (status.get_attribute("data-state") in ("done", "error")) and status.get_attribute("data-state"))
    assert state == "done", status.text
    return int(driver.find_element(By.ID, "answer").get_attribute("data-label"))


def draw(driver, digit, finger):
    """Draw `digit`'s strokes on the pad: pointer down, along the stroke, up, as a hand would."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    kind = interaction.POINTER_TOUCH if finger else interaction.POINTER_MOUSE
    for stroke in strokes(digit):
        actions = ActionBuilder(driver, mouse=PointerInput(kind, "finger" if finger else "mouse"), duration=10)
        points = [(int((column + 0.5 - 14) * CELL), int((row + 0.5 - 14) * CELL)) for row, column in stroke]
        actions.pointer_action.move_to(pad, *points[0]).pointer_down()
        for x, y in points[1:]:
            actions.pointer_action.move_to(pad, x, y)
        actions.pointer_action.pointer_up()
        actions.perform()


def save_screenshot(driver, name):
    """Save a screenshot into the test output directory (MNIST_EDGE_TEST_OUTPUT, default /tmp)."""
    directory = pathlib.Path(os.environ.get("MNIST_EDGE_TEST_OUTPUT", "/tmp/mnist-edge-test-output"))
    directory.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(directory / name))
    return directory / name


def test_ten_digits_drawn_stroke_by_stroke_are_read_right(page, digits):
    from selenium.webdriver.common.by import By

    indices = [int(np.flatnonzero(digits.y_test == digit)[0]) for digit in range(10)]
    shown = []
    for count, index in enumerate(indices):
        page.find_element(By.ID, "clear").click()
        draw(page, digits.x_test[index], finger=count % 2 == 1)
        shown.append(answer(page))
        seen = page.execute_script(
            "const c = document.getElementById('seen').getContext('2d');"
            "return Array.from(c.getImageData(0, 0, 28, 28).data).filter((v, i) => i % 4 === 0);")
        assert max(seen) == 255 and len(seen) == 784  # the 28×28 input the model saw is drawn
    # Drawn at the input shape /api/info gives, not at a size written into the page.
    assert page.execute_script("const c = document.getElementById('seen'); return [c.height, c.width];") == [28, 28]
    assert page.find_element(By.ID, "seen-caption").text == "what the model saw (28×28)"
    truth = [int(digits.y_test[index]) for index in indices]
    print("drawn:", truth, "page says:", shown)
    assert sum(a == b for a, b in zip(shown, truth)) >= 9, (truth, shown)
    # Top-3 holds only classes that show as 1% or more, in whole percentages (int8 moves in 1/256 steps).
    top = [item.text for item in page.find_elements(By.CSS_SELECTOR, "#top li")]
    assert 1 <= len(top) <= 3 and all(re.fullmatch(r"\d\s+(over 99|[1-9]\d?)%", text) for text in top), top
    assert "ms" in page.find_element(By.ID, "latency").text
    save_screenshot(page, "serve-page-drawn.png")


def test_a_photo_through_the_file_input(page, digits, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    index = 12
    path = tmp_path / "photo_of_a_digit.jpg"
    Image.fromarray(photo_of(digits.x_test[index], np.random.default_rng(0))).save(path, quality=85)
    file_input = page.find_element(By.ID, "photo")
    assert file_input.get_attribute("accept") == "image/*" and file_input.get_attribute("capture") is not None
    file_input.send_keys(str(path))
    assert answer(page) == int(digits.y_test[index])
    assert "photo_of_a_digit.jpg" in page.find_element(By.ID, "status").text


def test_the_live_camera_on_localhost(page, camera_video):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    start = page.find_element(By.ID, "camera-start")
    assert start.is_displayed()  # 127.0.0.1 is a secure context: the camera is offered
    start.click()
    capture = page.find_element(By.ID, "camera-capture")
    WebDriverWait(page, 20).until(lambda _: capture.is_displayed()
                                  and page.execute_script("return document.getElementById('video').videoWidth") > 0)
    capture.click()
    assert answer(page) == camera_video[1]


def test_fits_a_phone_screen_without_console_errors(page):
    page.set_window_size(390, 844)
    overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    pad_width = page.execute_script("return document.getElementById('pad').getBoundingClientRect().width")
    save_screenshot(page, "serve-page-phone.png")
    page.set_window_size(1100, 900)
    assert overflow <= 0 and 200 <= pad_width <= 390
    # The one expected: the first /api/info, answered 401, which made the page ask for the token.
    errors = [entry for entry in page.get_log("browser")
              if entry["level"] == "SEVERE" and "/api/info" not in entry["message"] and "401" not in entry["message"]]
    assert not errors, json.dumps(errors, indent=1)


def live_figures_as_the_page_writes_them(live):
    """/api/info's live figures in the page's own format (app.js: proportionText, changeText)."""

    def percent(value):
        return f"{100 * value:.2f}%"

    def proportion(figure):
        if figure["trials"] == 0:
            return "none yet"
        low, high = figure["interval"]
        return f"{percent(figure['value'])} of {figure['trials']} [{percent(low)}, {percent(high)}]"

    def points(value):
        return ("+" if value >= 0 else "") + f"{value:.2f}"

    change = live["accuracy"]["change"]
    if change is None:
        change_text = "none yet"
    else:
        p_value = "< 0.001" if change["mcnemar_p"] < 0.001 else f"{change['mcnemar_p']:.3f}"
        low, high = change["interval_points"]
        change_text = f"{points(change['points'])} pt [{points(low)}, {points(high)}], McNemar p {p_value}"
    return {
        "live-agreement": proportion(live["shadow"]["agreement"]),
        "live-window": proportion(live["shadow"]["window"]["agreement"]),
        "live-labelled": str(live["feedback"]["labelled"]),
        "live-int8": proportion(live["accuracy"]["int8"]),
        "live-float": proportion(live["accuracy"]["float"]),
        "live-change": change_text,
    }


def test_right_or_wrong_feedback_and_the_live_panel_match_api_info(page, digits):
    """Three drawn digits answered "right?" on the page (one through "No" and the true class): the
    service counts them, and every figure of the live panel is /api/info's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = page.find_element(By.ID, "feedback-status")
    indices = [int(np.flatnonzero(digits.y_test == digit)[1]) for digit in (3, 5, 8)]
    for count, index in enumerate(indices):
        page.find_element(By.ID, "clear").click()
        draw(page, digits.x_test[index], finger=False)
        shown = answer(page)
        truth = int(digits.y_test[index])
        assert page.find_element(By.ID, "feedback").is_displayed()
        if count == 0 or shown != truth:  # once through "No" and the class buttons, whatever the page said
            page.find_element(By.ID, "feedback-no").click()
            page.find_element(By.CSS_SELECTOR, f'#class-buttons button[data-label="{truth}"]').click()
        else:
            page.find_element(By.ID, "feedback-yes").click()
        state = WebDriverWait(page, 30).until(
            lambda _: status.get_attribute("data-state") in ("done", "error") and status.get_attribute("data-state"))
        assert state == "done", status.text
        assert f"counted as {truth}" in status.text and "float model said" in status.text
        assert not page.find_element(By.ID, "feedback-yes").is_enabled()  # once per prediction
        # ...and it looks it: not the colour of a button that can be pressed.
        disabled, enabled = page.execute_script(
            "return ['feedback-yes', 'clear'].map((id) => getComputedStyle(document.getElementById(id)).backgroundColor)")
        assert disabled != enabled, disabled
    info = page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('api/info', {headers: {Authorization: 'Bearer ' + localStorage.getItem('mnist-edge-token')}})"
        ".then((response) => response.json()).then(done);")
    live = info["live"]
    assert live["feedback"]["labelled"] == 3 and live["accuracy"]["int8"]["trials"] == 3
    assert live["shadow"]["agreement"]["trials"] >= 13  # every prediction of this page was shadowed
    shown = {key: page.find_element(By.ID, key).text for key in live_figures_as_the_page_writes_them(live)}
    print(json.dumps(shown, indent=1))
    assert shown == live_figures_as_the_page_writes_them(live)
    page.execute_script("document.getElementById('live-panel').scrollIntoView()")
    save_screenshot(page, "serve-live-panel.png")
    page.find_element(By.ID, "live-panel").screenshot(str(save_screenshot(page, "serve-page-feedback.png").with_name(
        "serve-live-panel-only.png")))


@pytest.fixture
def phone(browser):
    """The browser as a phone: a 390×844 viewport with touch, as Chromium's device emulation makes it."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    yield browser
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def wait_for_status(driver, wanted, timeout=30):
    """Wait until the page's status is in state `wanted` ("done", "error"...); return its text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.get_attribute("data-state") == wanted,
                                         message=f"status never became {wanted!r}")
    return status.text


def shows_no_answer(driver):
    """True when the page shows no answer: no digit, no top-3, no "Right?"."""
    from selenium.webdriver.common.by import By

    answer = driver.find_element(By.ID, "answer")
    return (not answer.is_displayed() and answer.get_attribute("data-label") is None
            and not driver.find_elements(By.CSS_SELECTOR, "#top li") and not driver.find_element(By.ID, "feedback").is_displayed())


def test_on_a_phone_the_answer_shows_with_the_pad_and_errors_replace_it(phone, trained_bundle, mnist, tmp_path):
    """A phone user's first minutes: a digit of two strokes drawn before the token is known, a wrong
    token, the right one; then a file that is no image, and a server that has gone away."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    fours = [int(index) for index in np.flatnonzero(mnist.y_test == 4)[:20]]
    index = next((each for each in fours if len(strokes(mnist.x_test[each])) >= 2), None)
    require(index is not None, "no MNIST 4 among the first 20 whose skeleton takes two strokes")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with ServeProcess(trained_bundle, "--token-file", str(token_file), "--self-check-images", "200") as server:
        phone.get(server.url + "/")
        form = phone.find_element(By.ID, "token-form")
        WebDriverWait(phone, 20).until(lambda _: form.is_displayed())
        draw(phone, mnist.x_test[index], finger=True)
        assert "needs its access token" in wait_for_status(phone, "error")

        token_input = phone.find_element(By.ID, "token-input")
        token_input.send_keys("not-the-token")
        form.submit()
        note = phone.find_element(By.ID, "token-note")
        WebDriverWait(phone, 20).until(lambda _: form.is_displayed() and "rejected" in note.text)
        assert token_input.get_attribute("value") == ""
        token_input.send_keys(TOKEN)
        form.submit()
        assert wait_for_status(phone, "done") == "Classified the drawing."  # the drawing went again by itself
        assert int(phone.find_element(By.ID, "answer").get_attribute("data-label")) == 4

        # Seen at once, without scrolling: the answer, its top-3 and "Right?" are inside the viewport.
        boxes = phone.execute_script(
            "return [window.scrollY, window.innerHeight, window.innerWidth].concat("
            "['pad', 'answer', 'feedback'].map((id) => document.getElementById(id).getBoundingClientRect().toJSON()))")
        scroll_y, height, width, pad, answer_box, feedback = boxes
        print("viewport", width, "×", height, "scrollY", scroll_y, "answer", answer_box, "feedback", feedback)
        assert (width, height, scroll_y) == (390, 844, 0)
        assert pad["top"] >= 0 and 0 <= answer_box["top"] and answer_box["bottom"] <= height
        assert feedback["height"] > 0 and feedback["bottom"] <= height
        # Whole percentages, "over 99%" at the top, and no class that rounds to 0%.
        sure = phone.find_element(By.CSS_SELECTOR, "#answer small").text
        assert sure in ("over 99% sure", *(f"{value}% sure" for value in range(1, 100))), sure
        top = [item.text for item in phone.find_elements(By.CSS_SELECTOR, "#top li")]
        assert top and all(not text.endswith(" 0%") and "." not in text for text in top), top
        # Two strokes, one prediction: the first stroke alone was never sent (the one before the
        # token was refused, so nothing was counted for it).
        status, info = call_json(server, "GET", "/api/info", token=TOKEN)
        assert status == 200 and info["live"]["shadow"]["agreement"]["trials"] == 1
        save_screenshot(phone, "serve-page-phone-answer.png")

        not_an_image = tmp_path / "notanimage.png"
        not_an_image.write_bytes(b"this is a text file\n")
        phone.find_element(By.ID, "photo").send_keys(str(not_an_image))
        assert "notanimage.png" in wait_for_status(phone, "error")
        assert shows_no_answer(phone)
        pad_pixels = phone.execute_script(
            "const pad = document.getElementById('pad');"
            "return Array.from(pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data).filter((v) => v < 255).length")
        assert pad_pixels == 0  # the photo replaced the drawing
        save_screenshot(phone, "serve-page-phone-error.png")

        phone.find_element(By.ID, "clear").click()
        draw(phone, mnist.x_test[index], finger=True)
        wait_for_status(phone, "done")
        assert phone.find_element(By.ID, "feedback-yes").is_enabled()
        server.stop()
        phone.find_element(By.ID, "clear").click()
        assert shows_no_answer(phone)  # Clear leaves nothing of the old answer
        draw(phone, mnist.x_test[index], finger=True)
        assert "the device is not answering" in wait_for_status(phone, "error")
        assert shows_no_answer(phone) and not phone.find_element(By.ID, "feedback-yes").is_enabled()
