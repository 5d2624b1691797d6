"""The self-contained ``report.html``'s page shell and embedded figures.

The page opens from disk with no network: Plotly's JavaScript is embedded once, in one
``<script>``; each figure is its JSON in a ``<script type="application/json">`` next to an empty
``div.plotly-figure``, drawn by one small script at the end of the page. When every figure is
drawn, ``<body data-figures-rendered="N">`` is set (the browser test waits for it). All text from
artifacts is HTML-escaped.
"""

from __future__ import annotations

from typing import Any

from saeinverse.report.markup import esc

STYLE = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --accent:#2563eb; --bg:#f3f4f6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif; color:var(--ink);
       background:var(--bg); }
header.top { background:#111827; color:white; padding:14px 28px; }
header.top h1 { margin:0; font-size:20px; }
header.top .sub { color:#d1d5db; font-size:13px; }
nav.toc { background:white; border-bottom:1px solid var(--line); padding:8px 28px;
          position:sticky; top:0; z-index:10; display:flex; flex-wrap:wrap; gap:6px 14px; }
nav.toc a { color:var(--accent); text-decoration:none; font-size:13px; }
main { max-width:1200px; margin:0 auto; padding:18px 28px 60px; }
section { background:white; border:1px solid var(--line); border-radius:8px; padding:16px 20px;
          margin:16px 0; }
h2 { margin:0 0 10px; font-size:18px; }
h3 { margin:16px 0 6px; font-size:15px; }
table.kv { border-collapse:collapse; font-size:13px; }
table.kv th, table.kv td { text-align:left; padding:3px 12px 3px 0; border-bottom:1px solid var(--line);
          vertical-align:top; }
table.kv th { color:var(--muted); font-weight:500; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(300px,1fr)); gap:8px 24px; }
.note { color:var(--muted); font-style:italic; margin:4px 0; }
.notes li { color:#92400e; }
.status-done { color:#15803d; } .status-off, .status-missing { color:var(--muted); }
.status-unfinished, .status-stale, .status-unreadable { color:#b91c1c; }
.plotly-figure { width:100%; min-height:200px; margin:8px 0; }
article.feature-card { background:white; border:1px solid var(--line); border-left:4px solid var(--accent);
          border-radius:8px; padding:14px 20px; margin:18px 0; }
article.feature-card h2 .badge { font-size:12px; font-weight:500; background:#eef2ff; color:#3730a3;
          border-radius:10px; padding:2px 8px; margin-left:8px; vertical-align:middle; }
blockquote.explanation { margin:6px 0; padding:8px 12px; background:#f9fafb;
          border-left:3px solid #9ca3af; font-size:15px; }
.token-heatmap { display:flex; flex-direction:column; gap:6px; }
.token-row .row-head { font-size:12px; color:var(--muted); }
.token-row .value { margin-left:8px; font-weight:600; color:#9a3412; }
.token-row .detail { margin-left:8px; }
.tokens { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; line-height:1.9;
          white-space:pre-wrap; word-break:break-all; }
.tok { white-space:pre; border-radius:2px; padding:1px 0; }
.tok.unknown { border-bottom:1px dotted #d1d5db; }
.tok.over { outline:1.5px solid #b91c1c; }
h4 { margin:8px 0 4px; font-size:13px; color:var(--muted); font-weight:600; }
table.logits td.logit-value { font-variant-numeric:tabular-nums; color:#374151; }
ul.neighbours { display:flex; flex-wrap:wrap; gap:4px 18px; padding:0; list-style:none; margin:4px 0; }
ul.neighbours .value { color:var(--muted); font-size:12px; }
.legend-swatch { display:inline-block; width:40px; height:10px; vertical-align:middle;
          background:linear-gradient(to right, rgba(234,88,12,0), rgba(234,88,12,1)); }
"""

RENDER = """
(function () {
  var jobs = [];
  var nodes = document.querySelectorAll('script.figure-data');
  for (var i = 0; i < nodes.length; i++) {
    var node = nodes[i];
    var target = document.getElementById(node.getAttribute('data-target'));
    try {
      var fig = JSON.parse(node.textContent);
      var config = Object.assign({responsive: true, displaylogo: false}, fig.config || {});
      jobs.push(Plotly.newPlot(target, fig.data, fig.layout || {}, config).then(
        (function (t) { return function () { t.setAttribute('data-rendered', 'true'); }; })(target)));
    } catch (err) {
      console.error('figure ' + node.getAttribute('data-target') + ' failed: ' + err);
    }
  }
  Promise.all(jobs).then(function () {
    document.body.setAttribute('data-figures-rendered', String(jobs.length));
  }, function (err) {
    console.error('a figure failed to render: ' + err);
    document.body.setAttribute('data-figures-rendered', 'error');
  });
})();
"""


class FigureSink:
    """Turns Plotly figures into page fragments, each with a unique id."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: Any, name: str, missing: str = "") -> str:
        """The figure's div and JSON; for None, a note saying why there is no figure."""
        if fig is None:
            return f'<p class="note">{esc(missing)}</p>' if missing else ""
        self.count += 1
        fid = f"figure-{self.count}"
        data = fig.to_json().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return (
            f'<div class="plotly-figure" id="{fid}" data-figure="{esc(name)}"></div>'
            f'<script type="application/json" class="figure-data" data-target="{fid}">{data}</script>'
        )


def page(title: str, subtitle: str, nav: list[tuple[str, str]], body: str) -> str:
    """The whole document: Plotly's JavaScript once, the style, the body and the render script."""
    from plotly.offline import get_plotlyjs

    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n"
        f'<script type="text/javascript">{plotly_js}</script>\n</head>\n<body>\n'
        f'<header class="top"><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>\n'
        f'<nav class="toc">{links}</nav>\n<main>\n{body}\n</main>\n'
        f"<script>{RENDER}</script>\n</body>\n</html>\n"
    )
