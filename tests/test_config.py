"""Settings come from CDS_* variables, and every variable the code reads is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds_service.config import SETTING_NAMES, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_environment_overrides_defaults():
    settings = Settings.from_env({
        "CDS_MODE": "production", "CDS_ALLOWED_FHIR_SERVERS": "https://a.example/fhir, https://b.example/r4",
        "CDS_MAX_BODY_BYTES": "1024", "CDS_CARDS_WHEN_APPROPRIATE": "yes", "CDS_FHIR_READ_TIMEOUT": "2.5",
    })
    assert settings.mode == "production"
    assert settings.allowed_fhir_servers == ("https://a.example/fhir", "https://b.example/r4")
    assert settings.max_body_bytes == 1024 and settings.cards_when_appropriate is True
    assert settings.fhir_read_timeout == 2.5


@pytest.mark.parametrize("name, value", [("CDS_MAX_BODY_BYTES", "lots"), ("CDS_CARDS_WHEN_APPROPRIATE", "maybe")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="CDS_MODE"):
        Settings(mode="staging").validate()


def test_readme_documents_every_variable_the_code_reads():
    readme = (ROOT / "README.md").read_text()
    read_in_code = set()
    for path in (ROOT / "cds_service").rglob("*.py"):
        read_in_code |= set(re.findall(r"""environ(?:\.get)?\(\s*["']((?:CDS|WEB|PROMETHEUS|GUNICORN)_[A-Z_]+)""", path.read_text()))
    missing = sorted(name for name in set(SETTING_NAMES) | read_in_code if f"`{name}`" not in readme)
    assert not missing, f"README configuration table lacks {missing}"
