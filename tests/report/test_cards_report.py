"""The feature cards in the report of a tiny run: every card shows the five dashboard components
with values, read from the cards stage's artifact (in Chromium: ``test_browser.py``)."""

from __future__ import annotations

import re

import pytest

from saeinverse.report import build_report
from saeinverse.report.loaders import load_run

COMPONENTS = ("logits", "histogram", "neighbours", "exemplars", "intervals")


@pytest.fixture
def tiny_cards_run(tiny_run):
    """The report's tiny run (``tests/report/conftest.py``): run_experiment with every stage."""
    return tiny_run


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
