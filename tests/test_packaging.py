"""`pip install .` gives a working service from any directory: knowledge and schemas ship in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_knowledge_base_and_schemas(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_knowledge = {p.relative_to(ROOT / "knowledge").as_posix() for p in (ROOT / "knowledge").rglob("*.json")}
    assert shipped_knowledge, "the repository has knowledge files"
    for relative in shipped_knowledge:
        assert f"cds_service/knowledge_data/{relative}" in names, relative
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cds_service").rglob("*.py")}
    assert modules - names == set(), "every room of the package ships in the wheel"
    for schema in ("discovery", "request", "response", "feedback"):
        assert f"cds_service/hooks/schemas/{schema}.schema.json" in names
    for template in ("page.html", "evidence.css"):  # the evidence pages the cards link to
        assert f"cds_service/evidence/templates/{template}" in names


def test_service_loads_its_knowledge_from_another_directory(tmp_path):
    code = "from cds_service.kb.loader import load_knowledge; print(load_knowledge().version)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
