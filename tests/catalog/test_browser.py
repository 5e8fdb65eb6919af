"""The published index.html in a real headless browser (Debian's chromium, driven by Playwright)."""
import os
import shutil
from pathlib import Path

from PIL import Image
from playwright import sync_api as playwright

from catalog import publish as pub
from catalog.rows import ok_row
from tests.fixtures.synthetic import result

CHROMIUM = os.environ.get("SUPERWEIGHTS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SUPERWEIGHTS_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _red_at(img, layer: int, layers: int) -> bool:
    from catalog import plots

    x = plots.LEFT + (layer + 0.5) * (plots.W - plots.LEFT - plots.RIGHT) / layers
    return any(img.getpixel((int(x), y)) == plots.FOUND for y in range(plots.TOP, plots.H - plots.BOTTOM))


def test_index_html_shows_the_table_and_the_plots(cat, tmp_path):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: `make test` installs Debian's chromium (apt)"
    cat.import_reference("catalog/data/published_super_weights.csv")
    cat.write_scan(ok_row(result("huggyllama/llama-7b", 1, coords=[(2, 3968, 7003, "super_weight"),
                                                                   (2, 3968, 11, "super_set")])))
    # a set that matters only together, in a layer with no super weight alone: its layer is marked too
    cat.write_scan(ok_row(result("org/second", 1, coords=[(5, 4, 5, "super_set"), (5, 4, 6, "super_set"),
                                                          (1, 7, 8, "negligible")])))
    out = tmp_path / "index"
    pub.publish(cat, out)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        # the page opens on the answer: every catastrophic coordinate across models, in one table
        first = page.locator("table").first
        assert first.get_attribute("id") == "answer"
        answer = [r.split("\t") for r in first.locator("tr").all_inner_texts()[1:]]
        assert [(r[0], r[1], r[3], r[4]) for r in answer] == [
            ("huggyllama/llama-7b", "2", "[3968, 7003]", "super weight"),
            ("huggyllama/llama-7b", "2", "[3968, 11]", "super set"),
            ("org/second", "5", "[4, 5]", "super set"), ("org/second", "5", "[4, 6]", "super set")]
        assert all("[" in r[5] and r[7] for r in answer)  # ratio with its interval, and windows
        text = page.locator("body").inner_text()
        assert not any(e in text for e in ("&lt;", "&gt;", "&amp;", "&middot;", "%%"))  # no raw entities
        cells = page.locator("table.coords tr td").all_inner_texts()
        assert "[3968, 7003]" in cells and "super weight" in cells and "paper Table 1" in cells
        assert page.locator("section.model").count() == 2
        # every plot loaded as a real image (a broken <img> has naturalWidth 0)
        for img in page.locator("section.model img").all():
            img.scroll_into_view_if_needed()
        widths = page.eval_on_selector_all("section.model img", "els => els.map(e => e.complete && e.naturalWidth)")
        assert widths == [640, 640]
        second = page.locator("section.model[data-model='org/second'] img")
        assert second.get_attribute("alt").endswith("red: layer 5")
        plot = Image.open(out / second.get_attribute("src")).convert("RGB")
        assert _red_at(plot, 5, 24) and not _red_at(plot, 1, 24)  # the set's layer drawn red, no other
        page.fill("#filter", "second")
        assert page.locator("section.model:visible").count() == 1
        page.fill("#filter", "")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "index.png").stat().st_size > 10_000
