"""Templates (package data under ``templates/``) rendered with Jinja2, every value escaped."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from jinja2 import Environment, PackageLoader, select_autoescape

STATIC_FILES = ("console.css",)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("cds_service.console", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda n: f"{int(n):,}".replace(",", "\u202f") if n is not None else "–"
    env.filters["pct"] = lambda x: f"{x:.1f} %"
    env.filters["ms"] = lambda x: "–" if x is None else f"{x:.1f} ms"
    return env


def page(name: str, **context) -> str:
    return _environment().get_template(name).render(**context)


def static_file(name: str) -> str | None:
    if name not in STATIC_FILES:
        return None
    return resources.files("cds_service.console").joinpath("static", name).read_text(encoding="utf-8")
