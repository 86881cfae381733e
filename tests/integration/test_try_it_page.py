"""The try-it page in a real headless Chromium (Debian's, driven by Playwright): a tiny model makes a
video that the page's <video> element plays."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from serve.catalog import get_spec
from tests.support import REPO, png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SCREENSHOT = REPO / "out" / "try-it.png"  # docs/try-it.png, which the README shows, is a copy of one
# Chromium may only reach loopback: anything else goes to a proxy on a closed loopback port and fails.
CHROMIUM_ARGS = ["--no-sandbox", "--proxy-server=http://127.0.0.1:9", "--disable-background-networking"]


@pytest.fixture(scope="module")
def page(service) -> Iterator:
    from playwright.sync_api import sync_playwright

    subprocess.run(["bash", str(REPO / "scripts" / "chromium.sh")], check=True, timeout=900)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 1100})
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(f"{service.http_url}/")
        page.wait_for_selector("#model option[value='cogvideox-2b']", state="attached")
        yield page
        browser.close()


def generate(page) -> float:
    """Press Generate; the seconds of the new video the page plays, once it has loaded it."""
    before = page.get_attribute("video", "src") or ""
    page.click("#submit")
    page.wait_for_function(
        "old => { const v = document.querySelector('video'); "
        "return v.src && v.src !== old && v.duration > 0; }",
        arg=before,
        timeout=180_000,
    )
    return page.evaluate("document.querySelector('video').duration")


def test_a_text_to_video_model_makes_a_video_the_page_plays(page):
    limits = get_spec("cogvideox-2b").tiny_limits
    page.select_option("#model", "cogvideox-2b")
    assert page.input_value("#num_frames") == str(limits.default_num_frames)
    assert page.get_attribute("#num_frames", "max") == str(limits.num_frames.max)
    assert page.is_hidden("#image")  # t2v: no image to give
    page.fill("#prompt", "a red fox running in the snow")
    page.fill("#num_inference_steps", "3")
    duration = generate(page)
    assert duration == pytest.approx(limits.default_num_frames / limits.default_fps, abs=0.2)
    assert "Done:" in page.text_content("#status")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.errors == []


def test_an_image_to_video_model_takes_a_dropped_image(page, tmp_path):
    image = tmp_path / "first-frame.png"
    image.write_bytes(png())
    page.select_option("#model", "svd")
    assert page.is_visible("#image")
    page.set_input_files("#image", str(image))
    page.fill("#num_inference_steps", "2")
    assert generate(page) > 0 and page.errors == []


def test_a_refusal_shows_the_services_message(page):
    page.select_option("#model", "cogvideox-2b")
    page.evaluate("document.querySelector('#num_inference_steps').max = 100000")
    page.fill("#num_inference_steps", "100000")
    page.click("#submit")
    page.wait_for_selector("#status.error")
    assert "num_inference_steps" in page.text_content("#status")
