"""The page of ``minilstm serve`` in a real browser: Debian's chromium, driven by Playwright (``playwright install``
cannot download a browser here; .ci/run installs chromium with apt-get). Types a sentence, waits for the French,
checks it against ``minilstm translate``'s answer, and saves a screenshot."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the serve tests need the serve extra: pip install '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright: pip install playwright")

from serve_helpers import Server, save_tiny_model  # noqa: E402

CHROMIUM = os.environ.get("MINILSTM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no chromium at {CHROMIUM} (Debian: apt-get "
                                 "install chromium; or set MINILSTM_CHROMIUM to a Chromium binary)")]


def minilstm_translate(checkpoint, *args) -> list[str]:
    """``python -m minilstm.translate CHECKPOINT ARGS``'s lines."""
    out = subprocess.run([sys.executable, "-m", "minilstm.translate", str(checkpoint), *args], check=True,
                         capture_output=True, text=True).stdout
    return out.splitlines()


SHIPPED = Path(__file__).parent.parent / "minilstm" / "models" / "en-fr-default"


@pytest.mark.parametrize("model,beam_width,sentence", [("tiny", 1, "I see."), ("tiny", 3, "Be nice."),
                                                       ("tiny-attention", 1, "Thanks!"),
                                                       ("shipped", 3, "Who are you?")])
def test_the_page_translates_as_you_type(tmp_path, model, beam_width, sentence):
    if model == "shipped":
        if not (SHIPPED / "config.json").is_file():
            pytest.skip(f"no shipped model at {SHIPPED}")
        checkpoint = SHIPPED
    else:
        attention = model == "tiny-attention"
        checkpoint = save_tiny_model(tmp_path / "tiny", attention="general" if attention else "none",
                                     dtype="float64" if attention else "float32")
    expected = minilstm_translate(checkpoint, "--beam-width", str(beam_width), sentence)[0]
    server = Server(None if model == "shipped" else checkpoint, "--beam-width", beam_width)
    screenshot = Path(os.environ.get("MINILSTM_SCREENSHOTS", tmp_path)) / f"page-{model}-beam{beam_width}.png"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 520})
                page.goto(server.url + "/")
                page.locator("#source").press_sequentially(sentence, delay=40)
                # The translation shown is of the whole sentence (not of a prefix typed before a pause).
                page.wait_for_selector(f'#translation[data-source="{sentence}"]', timeout=30_000)
                assert page.locator("#translation").text_content() == expected
                alternatives = page.locator("#alternatives li").all_text_contents()
                assert page.locator("#alternatives-box").is_visible() == (beam_width > 1)
                if beam_width > 1:
                    assert 1 <= len(alternatives) <= beam_width - 1 and expected not in alternatives
                # The attention table: a header row of the English characters, then a row per French one and the end.
                assert page.locator("#attention-box").is_visible() == (model == "tiny-attention")
                if model == "tiny-attention":
                    rows = page.locator("#attention tr")
                    assert rows.count() == 1 + len(expected) + 1
                    assert rows.nth(0).locator("th").count() == 1 + len(sentence)
                    assert rows.nth(1).locator("td").count() == len(sentence)
                page.screenshot(path=str(screenshot))
            finally:
                browser.close()
    finally:
        assert server.stop() == 0
    assert screenshot.stat().st_size > 1000


def test_the_page_keeps_a_paragraphs_lines_shows_the_detected_language_and_logs_no_error(tmp_path):
    """A paragraph of two lines, with the source language detected: the page shows the server's answer with its
    line break, the language found, and the browser logs no error (no failed request either: no favicon 404)."""
    if not (SHIPPED / "config.json").is_file():
        pytest.skip(f"no shipped model at {SHIPPED}")
    import httpx

    text = "I am very tired today.\nWhere is my bag?"
    server = Server(None)
    try:
        expected = httpx.post(server.url + "/translate", timeout=60,
                              json={"q": text, "source": "auto", "target": "fr"}).json()["translatedText"]
        assert expected.count("\n") == 1
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 520})
                problems = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
                page.goto(server.url + "/")
                page.select_option("#source-language", "auto")
                page.locator("#source").press_sequentially(text, delay=20)
                css_text = text.replace("\n", "\\A ")  # a line break in a CSS string
                page.wait_for_selector(f'#translation[data-source="{css_text}"]', timeout=30_000)
                assert page.locator("#translation").text_content() == expected
                assert "detected: English" in page.locator("#detected").text_content()
                assert problems == []
                page.screenshot(path=str(Path(os.environ.get("MINILSTM_SCREENSHOTS", tmp_path)) /
                                         "page-shipped-paragraph.png"))
                page.locator("#source").fill("Je suis très fatigué aujourd'hui et je veux rentrer à la maison.")
                page.locator("#source").dispatch_event("input")
                page.wait_for_selector("#status.error", timeout=30_000)
                assert "fr is not supported" in page.locator("#status").text_content()
                assert page.locator("#translation").text_content() == ""
                assert not page.locator("#attention-box").is_visible()
            finally:
                browser.close()
    finally:
        assert server.stop() == 0
