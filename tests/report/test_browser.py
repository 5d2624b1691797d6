"""The report of a tiny run, opened from disk in headless Chromium (Debian's, driven by Playwright).

No console error, every Plotly figure drawn (an SVG or a canvas inside its div), one card per
selected feature with its token heatmaps, and HTML-like tokens shown as text. Screenshots go to
``test-artifacts/report/``. Skipped, saying why, when Chromium or Playwright is not installed
(CI installs both: ``apt-get install -y chromium`` and ``pip install playwright``; never a
browser download).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from saeinverse.report import build_report, load_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium (or the one SAEINVERSE_CHROMIUM names)."""
    for candidate in (
        os.environ.get("SAEINVERSE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (CI: apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (CI: pip install playwright)"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def open_report(context, path: Path):
    """Open ``path`` from file://, collect console errors and failed requests, wait for the figures."""
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function(
        "document.body.getAttribute('data-figures-rendered') !== null", timeout=60_000
    )
    return page, problems, requests


def test_report_renders_every_figure_and_card_in_chromium(browser, tiny_run):
    path = build_report(tiny_run)
    run = load_run(tiny_run)
    page, problems, requests = open_report(browser, path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tiny-report-full.png"), full_page=True)
    page.add_style_tag(content="nav.toc { position: static; }")  # keep it off the card's shot
    page.locator(".feature-card").first.screenshot(path=str(ARTIFACTS / "tiny-report-card.png"))

    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests
    figures = page.locator("div.plotly-figure")
    n_figures = figures.count()
    assert page.get_attribute("body", "data-figures-rendered") == str(n_figures)
    names = set()
    for i in range(n_figures):
        div = figures.nth(i)
        names.add(div.get_attribute("data-figure"))
        drawn = div.locator("svg.main-svg, canvas").count()
        assert drawn > 0, f"figure {div.get_attribute('data-figure')} has no SVG or canvas"
        assert div.get_attribute("data-rendered") == "true"
    expected = {"density-histogram", "entropy-density", "cluster-map", "prompt-feature-heatmap",
                "activation-ratios", "explanation-scores"}  # fmt: skip
    expected |= {f"optimisation-{f}" for f in run.selected_ids}
    assert expected <= names

    cards = page.locator("article.feature-card")
    assert cards.count() == len(run.selected_ids) > 0
    for fid in run.selected_ids:
        card = page.locator(f"#feature-{fid}")
        assert card.locator(".token-row").count() >= 2  # exemplars and inverted prompts
        assert card.locator("blockquote.explanation").count() == 1
        assert_dashboard_holds_values(card)
    assert page.locator("script").count() == 2 + n_figures  # Plotly once, the renderer, the data


def assert_dashboard_holds_values(card) -> None:
    """The card's five dashboard components exist and hold values: 20 logit effects with numbers,
    a drawn histogram titled with the density, 5 nearest features, and exemplars and interval
    samples whose every token carries its activation."""
    values = card.locator('[data-component="logits"] td.logit-value').all_inner_texts()
    assert len(values) == 20 and all(math.isfinite(float(v)) for v in values)
    histogram = card.locator('[data-component="histogram"] div.plotly-figure')
    assert histogram.get_attribute("data-rendered") == "true"
    assert "density" in (histogram.locator("text.gtitle").first.text_content() or "").lower()
    assert card.locator('[data-component="neighbours"] li.neighbour').count() == 5
    for component in ("exemplars", "intervals"):
        tokens = card.locator(f'[data-component="{component}"] span.tok')
        assert tokens.count() > 0, component
        titles = [tokens.nth(i).get_attribute("title") or "" for i in range(tokens.count())]
        assert not any(t.endswith("not saved") for t in titles), component


def test_cluster_menu_switches_the_heatmap(browser, tiny_run):
    page, problems, _ = open_report(browser, build_report(tiny_run))
    heatmap = page.locator('div[data-figure="prompt-feature-heatmap"]')
    before = heatmap.locator(".xtick text").all_inner_texts()
    heatmap.locator(".updatemenu-header-group").click()
    heatmap.locator(".updatemenu-dropdown-button").nth(1).click()
    page.wait_for_function(
        "t => JSON.stringify([...document.querySelectorAll("
        "'div[data-figure=\"prompt-feature-heatmap\"] .xtick text')].map(e => e.textContent)) !== t",
        arg=json.dumps(before),
    )
    assert heatmap.locator(".xtick text").all_inner_texts() != before
    assert problems == []


def test_hostile_text_in_artifacts_stays_text(browser, run_copy):
    """An explanation carrying markup and a script is shown as text and never runs."""
    path = run_copy / "explain" / "explanations.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    hostile = '</blockquote><img src=x onerror="window.__injected=1"><script>window.__injected=2</script> & "q"'
    lines[0]["explanation"] = lines[0]["sentence"] = hostile  # the card shows the sentence
    lines[0]["rule"] = hostile
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    page, problems, requests = open_report(browser, build_report(run_copy))
    card = page.locator(f"#feature-{lines[0]['feature_id']}")
    assert card.locator("blockquote.explanation").inner_text() == hostile
    assert card.locator("details code").inner_text() == hostile
    assert page.locator("main img").count() == 0
    assert page.evaluate("typeof window.__injected") == "undefined"
    assert problems == [] and all(url.startswith("file://") for url in requests)
