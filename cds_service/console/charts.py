"""The overview's pictures: server-side SVG made by pygal, each drawn from the table shown below it.

pygal writes a small ``<script>`` holding the configuration of its optional tooltip JavaScript,
which the console never loads (no CDN, ``js=[]``): that element is removed, so the page's content
security policy can refuse every script. The chart's own ``<style>`` element gets the page's
nonce, and the one inline style attribute pygal writes becomes the SVG attribute it stands for.
The picture is labelled for screen readers; the table behind it carries the numbers.
"""

from __future__ import annotations

import re

import pygal
from pygal.style import Style

_STYLE = Style(
    background="white", plot_background="white", foreground="#222", foreground_strong="#111",
    foreground_subtle="#555", font_family="system-ui, sans-serif", label_font_size=12,
    major_label_font_size=12, legend_font_size=13, title_font_size=15,
    colors=("#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#0f766e"),
)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _config(title: str, labels: list[str]) -> dict:
    return dict(title=title, x_labels=labels, js=[], disable_xml_declaration=True, style=_STYLE, width=720,
                height=300, show_legend=True, legend_at_bottom=True, x_label_rotation=30 if len(labels) > 8 else 0,
                print_values=False, margin=12, truncate_label=24)


def _finish(chart, title: str, nonce: str) -> str:
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    svg = svg.replace("<style type=\"text/css\">", f"<style nonce=\"{nonce}\">", 1)
    # The hidden tooltip's inline style attribute would need 'unsafe-inline': say it as SVG does.
    svg = svg.replace('style="opacity: 0"', 'opacity="0"')
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg ", f"<svg role=\"img\" aria-label=\"{label}\" focusable=\"false\" ", 1)


def bars(title: str, labels: list[str], series: dict[str, list[float]], nonce: str) -> str:
    chart = pygal.Bar(**_config(title, labels))
    for name, values in series.items():
        chart.add(name, values)
    return _finish(chart, title, nonce)


def horizontal_bars(title: str, labels: list[str], values: list[float], nonce: str) -> str:
    chart = pygal.HorizontalBar(**{**_config(title, labels), "show_legend": False,
                                   "height": max(160, 40 + 28 * len(labels))})
    chart.add(title, values)
    return _finish(chart, title, nonce)


def lines(title: str, labels: list[str], series: dict[str, list[float | None]], nonce: str) -> str:
    chart = pygal.Line(**_config(title, labels), show_minor_x_labels=len(labels) <= 14,
                       x_labels_major_count=min(len(labels), 10))
    for name, values in series.items():
        chart.add(name, values)
    return _finish(chart, title, nonce)
