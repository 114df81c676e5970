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
