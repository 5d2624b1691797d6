"""The feature cards in the report of a tiny run: every card shows the five dashboard components
with values, read from the cards stage's artifact."""

from __future__ import annotations

import re

import pytest

from saeinverse.report import build_report
from saeinverse.report.loaders import load_run
from tests import builders

COMPONENTS = ("logits", "histogram", "neighbours", "exemplars", "intervals")


@pytest.fixture(scope="module")
def tiny_cards_run(tmp_path_factory):
    from saeinverse.run.pipeline import run_experiment

    root = tmp_path_factory.mktemp("cards") / "run"
    config = builders.tiny_config(pipeline={"run_explanations": False})
    run_experiment(config, run_dir=root, until="cards")
    return root


def _cards_html(html: str) -> dict[int, str]:
    parts = re.split(r'<article class="feature-card" id="feature-(\d+)"', html)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_card_shows_the_five_components(tiny_cards_run):
    run = load_run(tiny_cards_run)
    assert run.status["cards"] == "done" and run.cards is not None
    html = build_report(tiny_cards_run).read_text()
    assert 'class="selection-rule"' in html and "rule spread" in html
    cards = _cards_html(html)
    assert sorted(cards) == sorted(run.selected_ids) and cards
    for fid, card_html in cards.items():
        card = run.cards[fid]
        for component in COMPONENTS:
            assert f'data-component="{component}"' in card_html, (fid, component)
        assert card_html.count('class="logit-token"') == 20
        assert f"{card.positive_logits[0].value:+.3f}" in card_html
        assert card_html.count('class="neighbour"') == 5
        assert f'data-figure="histogram-{fid}"' in card_html
        assert "density" in card_html
        exemplars = card_html.split('data-component="exemplars"')[1]
        assert "not saved" not in exemplars.split('data-component="intervals"')[0]
        assert (
            "not saved"
            not in card_html.split('data-component="intervals"')[1].split(
                "<h3>Inverted prompts</h3>"
            )[0]
        )


def test_neighbours_with_a_card_are_links(tiny_cards_run):
    run = load_run(tiny_cards_run)
    cards = _cards_html(build_report(tiny_cards_run).read_text())
    for fid, card_html in cards.items():
        for n in run.cards[fid].neighbours:
            linked = f'<li class="neighbour"><a href="#feature-{n.feature_id}">' in card_html
            assert linked == (n.feature_id in run.selected_ids)


def test_the_api_reads_the_cards_the_report_shows(tiny_cards_run):
    import saeinverse

    cards = saeinverse.feature_cards(tiny_cards_run)
    assert cards.cards == load_run(tiny_cards_run).cards.cards


def test_the_five_components_hold_values_in_chromium(tiny_cards_run, tmp_path):
    from tests.report.test_browser import LAUNCH_FLAGS, chromium_path

    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (CI: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    run = load_run(tiny_cards_run)
    path = build_report(tiny_cards_run)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True,
            args=LAUNCH_FLAGS, viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "document.body.getAttribute('data-figures-rendered') !== null", timeout=60_000
            )
            for fid in run.selected_ids:
                card = page.locator(f"#feature-{fid}")
                values = card.locator('[data-component="logits"] td.logit-value').all_inner_texts()
                assert len(values) == 20 and all(float(v) == float(v) for v in values)
                histogram = card.locator('[data-component="histogram"] div.plotly-figure')
                assert histogram.get_attribute("data-rendered") == "true"
                assert (
                    "density"
                    in (histogram.locator("text.gtitle").first.text_content() or "").lower()
                )
                assert card.locator('[data-component="neighbours"] li.neighbour').count() == 5
                for component in ("exemplars", "intervals"):
                    tokens = card.locator(f'[data-component="{component}"] span.tok')
                    assert tokens.count() > 0
                    titles = [tokens.nth(i).get_attribute("title") for i in range(tokens.count())]
                    assert not any(t.endswith("not saved") for t in titles), component
        finally:
            context.close()
    assert errors == []
