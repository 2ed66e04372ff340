"""HTML of the evidence pages: an index of the scenarios and one page per scenario.

Everything shown is escaped; the page is built from the knowledge base only (never from a request),
so it is the same for every visitor and holds no patient data.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from importlib import resources
from string import Template

from cds_service.cards import wording
from cds_service.evidence.rules import Rule, describe
from cds_service.kb.model import Knowledge, Procedure, Scenario, ScenarioRating

CSS_NAME = "evidence.css"
RRL_LEGEND = ("O: no ionising radiation; ☢ <0.1 mSv; ☢☢ 0.1–1 mSv; ☢☢☢ 1–10 mSv; ☢☢☢☢ 10–30 mSv; "
              "☢☢☢☢☢ 30–100 mSv (typical adult effective dose, ACR relative radiation levels).")


@lru_cache(maxsize=4)
def _template(name: str) -> str:
    return resources.files("cds_service.evidence").joinpath("templates", name).read_text(encoding="utf-8")


def stylesheet() -> str:
    return _template(CSS_NAME)


def scenario_page(scenario: Scenario, knowledge: Knowledge) -> str:
    acr = wording.acr_provenance(scenario)
    subtitle = f'<p class="meta">{escape(acr)}</p>' if acr else ""
    sections = [
        _section("About this scenario", f"<p>{escape(wording.clinical_text(scenario.summary))}</p>")
        if wording.clinical_text(scenario.summary) else "",
        _section("Ratings", _ratings_table(scenario, knowledge)),
        _section("When this scenario applies", _rules(scenario, knowledge)),
        _section("Preferred studies, in order", _preferred(scenario, knowledge)),
        _section("Next steps", _advice(scenario.advice)) if scenario.advice else "",
        _section("Advice shown on cards", _recommendations(scenario, knowledge)) if scenario.recommendations else "",
        _section("Sources", _sources(scenario, knowledge)),
    ]
    return _page(scenario.title, subtitle, "\n".join(s for s in sections if s), knowledge)


def index_page(knowledge: Knowledge) -> str:
    items = "\n".join(
        f'<li><a href="{escape(s.id)}">{escape(s.title)}</a></li>'
        for s in sorted(knowledge.scenarios, key=lambda s: s.title)
    )
    content = _section("Scenarios", f"<ul>\n{items}\n</ul>")
    return _page("Imaging appropriateness in cancer follow-up", "", content, knowledge, index_url=".")


def _page(title: str, subtitle: str, content: str, knowledge: Knowledge, index_url: str = "./") -> str:
    return Template(_template("page.html")).substitute(
        title=escape(title), subtitle=subtitle, content=content, version=escape(knowledge.version),
        css_url=CSS_NAME, index_url=index_url,
    )


def _section(heading: str, body: str) -> str:
    slug = heading.lower().replace(" ", "-").replace(",", "")
    return f'<section aria-labelledby="{slug}">\n<h2 id="{slug}">{escape(heading)}</h2>\n{body}\n</section>'


def _ratings_table(scenario: Scenario, knowledge: Knowledge) -> str:
    rows = []
    for rating in sorted(scenario.ratings, key=lambda r: (-r.rating.rank, knowledge.procedures[r.procedure].name)):
        procedure = knowledge.procedures[rating.procedure]
        rows.append(
            f'<tr><th scope="row">{escape(procedure.name)}</th>'
            f'<td class="rating-{rating.rating.value}">{escape(rating.rating.label)}</td>'
            f'<td class="rrl">{escape(_radiation_cell(procedure))}</td>'
            f"<td>{_condition_cell(rating, knowledge)}</td>"
            f"<td>{_status_cell(rating)}</td></tr>"
        )
    for procedure_id in scenario.covers:
        procedure = knowledge.procedures[procedure_id]
        rows.append(f'<tr><th scope="row">{escape(procedure.name)}</th><td>Not rated for this scenario</td>'
                    f'<td class="rrl">{escape(_radiation_cell(procedure))}</td><td>—</td>'
                    "<td>The preferred study is suggested instead</td></tr>")
    return (
        "<table>\n<caption>Every study this scenario lists. " + escape(RRL_LEGEND) + "</caption>\n"
        '<thead><tr><th scope="col">Study</th><th scope="col">Rating</th>'
        '<th scope="col">Relative radiation level</th><th scope="col">Applies when</th>'
        '<th scope="col">Status</th></tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>"
    )


def _radiation_cell(procedure: Procedure) -> str:
    level = wording.radiation(procedure)
    if level:
        return level
    return "Varies with the area examined" if procedure.radiation.level == "varies" else "Not yet recorded"


def _condition_cell(rating: ScenarioRating, knowledge: Knowledge) -> str:
    rule = describe(rating.when, knowledge)
    return _rule_html(rule) if rule else "Always in this scenario"


def _status_cell(rating: ScenarioRating) -> str:
    if wording.is_verified(rating.confidence):
        return "Checked against the published source"
    return f'<span class="unverified">{escape(wording.NOT_VERIFIED[0].upper() + wording.NOT_VERIFIED[1:])}</span>'


def _rules(scenario: Scenario, knowledge: Knowledge) -> str:
    rule = describe(scenario.when, knowledge)
    return f'<ul class="rules">{_rule_item(rule)}</ul>' if rule else "<p>Every patient.</p>"


def _rule_html(rule: Rule) -> str:
    if not rule.members:
        return escape(rule.text)
    return f'<ul class="rules">{_rule_item(rule)}</ul>'


def _rule_item(rule: Rule) -> str:
    if not rule.members:
        return f"<li>{escape(rule.text)}</li>"
    members = "".join(_rule_item(member) for member in rule.members)
    return f"<li>{escape(rule.text)}<ul>{members}</ul></li>"


def _preferred(scenario: Scenario, knowledge: Knowledge) -> str:
    if not scenario.preferred:
        return "<p>No study is preferred: in this scenario the advice is not to image routinely.</p>"
    items = []
    for preference in scenario.preferred:
        text = escape(knowledge.procedures[preference.procedure].name)
        rule = describe(preference.when, knowledge)
        if rule:
            text += ", when: " + _rule_html(rule)
        items.append(f"<li>{text}</li>")
    note = ("<p>The first that applies to the patient, is rated well enough and is not ruled out by a recorded "
            "contraindication (for example a pacemaker for MRI) is suggested.</p>")
    return "<ol>" + "".join(items) + "</ol>" + note


def _advice(advice: str) -> str:
    lines = [wording.clinical_text(line) for line in advice.splitlines()]
    lines = [line for line in lines if line]
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{escape(line[2:])}</li>" for line in lines) + "</ul>"
    return "".join(f"<p>{escape(line)}</p>" for line in lines)


def _recommendations(scenario: Scenario, knowledge: Knowledge) -> str:
    items = []
    for item in scenario.recommendations:
        text = f"<strong>{escape(wording.without_notes(item.summary))}</strong>. {escape(wording.without_notes(item.detail))}"
        if item.suggest in knowledge.procedures:
            text += f" Suggested order: {escape(knowledge.procedures[item.suggest].name)}."
        if not wording.primary_sources(item.sources, knowledge):
            text += f' <span class="unverified">Advice {escape(wording.NOT_VERIFIED)}.</span>'
        rule = describe(item.when, knowledge)
        if rule:
            text += " Shown when: " + _rule_html(rule)
        items.append(f"<li>{text}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _sources(scenario: Scenario, knowledge: Knowledge) -> str:
    ids = list(scenario.sources)
    for rating in scenario.ratings:
        ids.extend(rating.sources)
    for item in scenario.recommendations:
        ids.extend(item.sources)
    items = []
    for source in wording.primary_sources(ids, knowledge):
        title = escape(source.title)
        items.append(f'<li><a href="{escape(source.url)}">{title}</a></li>' if source.url else f"<li>{title}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No published source is recorded yet.</p>"
