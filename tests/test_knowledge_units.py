"""A criterion's unit must be UCUM: a bad one stops ``check-knowledge`` and the service's start.

The unit of ``value_below``/``value_above`` is what results are converted into (chart/units.py);
one that is not UCUM would silently make every result in another spelling not count. The site
files here stand in an extra knowledge directory, as a site's criteria do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cds_service.kb.loader import load_knowledge
from tests.conftest import free_port
from tests.service_process import REPO, clean_env, start_dev_server

#: eGFR is written "mL/min/{1.73_m2}" in UCUM (the annotation in braces); the everyday spelling is not UCUM.
BAD_UNIT, GOOD_UNIT = "mL/min/1.73m2", "mL/min/{1.73_m2}"


def _site_dir(tmp_path: Path, unit: str) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "definitions.json").write_text(json.dumps({"definitions": {
        "site-severe-kidney-impairment": {"any": [
            {"observation": "egfr", "within_days": 90, "value_below": 15, "unit": unit},
        ]},
    }}))
    return site


def _expected_problem(site: Path) -> str:
    return (f"{site / 'definitions.json'}: $.definitions.site-severe-kidney-impairment.any[0].unit: "
            f"'{BAD_UNIT}' is not a valid UCUM unit")


def test_check_knowledge_names_the_file_and_criterion_of_a_bad_unit(tmp_path: Path):
    site = _site_dir(tmp_path, BAD_UNIT)
    done = subprocess.run([sys.executable, "-m", "cds_service", "check-knowledge", str(site)], cwd=REPO,
                          env=clean_env(CDS_KNOWLEDGE_CACHE_DIR="off"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "knowledge base INVALID" in done.stderr and _expected_problem(site) in done.stderr


def test_the_service_does_not_start_with_a_bad_unit_in_an_extra_directory(tmp_path: Path):
    site = _site_dir(tmp_path, BAD_UNIT)
    server = start_dev_server(tmp_path, free_port(), CDS_KNOWLEDGE_EXTRA_DIRS=str(site), CDS_KNOWLEDGE_CACHE_DIR="off")
    try:
        status = server.process.wait(timeout=60)
    finally:
        server.stop()
    assert status != 0
    assert _expected_problem(site) in server.log()


def test_a_ucum_unit_loads(tmp_path: Path):
    knowledge = load_knowledge(None, [_site_dir(tmp_path, GOOD_UNIT)])
    assert knowledge.definitions["site-severe-kidney-impairment"]["any"][0]["unit"] == GOOD_UNIT
