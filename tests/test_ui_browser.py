"""The web page in a real browser: Debian's chromium driven by Playwright (which downloads no browser).

One walk through the page as a user takes it, on miniworld: upload the demo concept's pictures, train a
short run while previews and the loss plot appear, reload the page mid-run, download the embedding
(and load it with diffusers), generate with the new word and download a PNG with its parameters, then
look at the Concepts tab. Screenshots of each screen go to $UI_SCREENSHOTS (docs/ui for the docs).
"""

import os
import socket
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONCEPT_IMAGES = sorted((Path(__file__).parents[1] / "examples" / "concepts" / "hidden-colour").glob("*.png"))
TOKEN = "<teal-thing>"
SCREENSHOTS = Path(os.environ["UI_SCREENSHOTS"]).resolve() if os.environ.get("UI_SCREENSHOTS") else None

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
pytest.importorskip("gradio", reason="needs gradio (pip install -e '.[dev]')")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_page(tmp_path, monkeypatch):
    from textual_inversion.config import UIConfig
    from textual_inversion.ui import start

    monkeypatch.chdir(tmp_path)  # the default folders, runs/ and outputs/, as a user who starts it sees them
    page = start(UIConfig(port=free_port(), device="cpu"))
    yield page
    page.close()


@pytest.fixture
def browser_page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        browser.close()


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_for_images(page, selector: str, count: int) -> None:
    """Until `count` pictures under `selector` have arrived and been decoded, not merely been placed."""
    page.wait_for_function("([selector, count]) => { const images = [...document.querySelectorAll(selector + ' img')];"
                           " return images.length >= count && images.every(i => i.complete && i.naturalWidth > 0); }",
                           arg=[selector, count])


def test_teach_generate_and_manage_a_concept_in_the_browser(served_page, browser_page, tmp_path):
    page, shots = browser_page, SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    outside = []  # the page must work offline: nothing may be fetched from anywhere but the server
    page.on("request", lambda request: None if request.url.startswith(served_page.url) else outside.append(request.url))
    page.set_default_timeout(60_000)
    page.goto(served_page.url)

    # Teach: five pictures, the word, a short run with previews every 10 steps.
    page.locator("#teach-images input[type=file]").set_input_files([str(p) for p in CONCEPT_IMAGES])
    wait_for_images(page, "#teach-thumbnails", 5)
    page.locator("#train-token textarea").fill(TOKEN)
    page.locator("#train-init_token textarea").fill("circle")
    page.locator("#train-steps textarea").fill("40")
    page.locator("#train-validation_prompt textarea").fill("a {token} on a sand background")
    page.locator("#teach-advanced button.label-wrap").click()
    advanced = {"lr": "0.02", "batch_size": "4", "validation_every": "10", "validation_steps": "10",
                "num_validation_images": "2"}
    for name, value in advanced.items():
        page.locator(f"#train-{name} input, #train-{name} textarea").first.fill(value)
    page.locator("#teach-advanced button.label-wrap").click()  # fold them away again for the screenshot
    page.locator("#teach-start").click()
    wait_for_images(page, "#teach-previews", 1)
    page.wait_for_selector("#teach-loss canvas, #teach-loss svg.marks")
    assert f"{TOKEN} · textual-inversion · job 1" in text_of(page, "#teach-status")
    page.screenshot(path=shots / "teach.png", full_page=True)

    page.reload()  # the job belongs to the server: a new page finds it again
    sync_api.expect(page.locator("#teach-status")).to_contain_text(f"{TOKEN} · textual-inversion · job 1",
                                                                   timeout=60_000)
    sync_api.expect(page.locator("#teach-status")).to_contain_text("finished", timeout=120_000)
    wait_for_images(page, "#teach-previews", 4)
    assert page.locator("#teach-previews img").count() == 4  # steps 10, 20, 30, 40
    with page.expect_download() as download:
        page.locator('#teach-files a[download="learned_embeds.safetensors"]').click()
    embedding = tmp_path / "downloaded.safetensors"
    download.value.save_as(embedding)

    from safetensors.torch import load_file

    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    pipe.load_textual_inversion(str(embedding), token=TOKEN)
    token_id = pipe.tokenizer.convert_tokens_to_ids(TOKEN)
    loaded = pipe.text_encoder.get_input_embeddings().weight[token_id]
    assert loaded.detach().equal(load_file(embedding)[TOKEN][0])

    # Generate with the new word; the downloaded PNG carries its parameters.
    page.get_by_role("tab", name="Generate").click()
    page.get_by_label(f"{TOKEN} · textual-inversion · teal-thing").check()
    page.locator("#generate-prompt textarea").fill(f"a big {TOKEN} on a navy background")
    page.locator("#generate-steps input").fill("10")
    page.locator("#generate-guidance textarea").fill("4")  # empty: the pipeline's default
    page.locator("#generate-num_images input").fill("2")
    page.locator("#generate-button").click()
    wait_for_images(page, "#generate-gallery", 2)
    page.screenshot(path=shots / "generate.png", full_page=True)
    with page.expect_download() as download:
        page.locator('#generate-files a[download="000001.png"]').click()
    with Image.open(download.value.path()) as png:
        parameters = png.text["parameters"]
    assert parameters.startswith(f"a big {TOKEN} on a navy background\nSteps: 10,")
    assert "Seed: 1," in parameters and "CFG scale: 4.0" in parameters

    # Concepts: the run is listed with its preview.
    page.get_by_role("tab", name="Concepts").click()
    wait_for_images(page, "#concepts-previews", 1)
    page.wait_for_function(  # the list has been refreshed: no "loading" veil over it in the screenshot
        "document.querySelector('#concepts-table [data-testid=status-tracker]')?.classList.contains('hide')")
    table = text_of(page, "#concepts-table")
    assert TOKEN in table and "textual-inversion" in table and "miniworld" in table and "finished" in table
    page.screenshot(path=shots / "concepts.png", full_page=True)
    assert outside == []
