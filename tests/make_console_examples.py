"""Write the "Try a chart" examples (cds_service/console/examples/*.json) from replay fixtures.

``python tests/make_console_examples.py``: each example is the hook request a CDS client would
send for a fixture case (prefetch filled from the fixture chart by the fixture FHIR server, as the
replay does in its ``prefetch`` mode), with the case's description. The charts are synthetic
fixtures of this repository (see fhir_fixtures/README.md); nothing in them is a real patient.
tests/test_console.py checks that the shipped examples are still what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service.devtools.fixture_fhir_server import FixtureFhirServer  # noqa: E402
from cds_service.devtools.replay import build_request, load_fixtures  # noqa: E402

#: Fixture case → the label the console shows for it (the committee's words, not the fixture's).
CASES = {
    "bone-surveillance-ct": "Osteosarcoma of the femur in follow-up: CT of the thigh with contrast",
    "breast-survivor-pet-ct": "Breast cancer survivor without symptoms: PET/CT for surveillance",
    "breast-headache-mri-brain": "Breast cancer with a new headache: MRI of the brain",
}
OUT = ROOT / "cds_service" / "console" / "examples"


def examples() -> dict[str, dict]:
    cases, charts = load_fixtures(ROOT / "fhir_fixtures")
    chosen = [c for c in cases if c.id in CASES]
    out = {}
    with FixtureFhirServer(list(charts.values())) as fhir:
        for case in chosen:
            body = build_request(case, "prefetch", 0, fhir)
            out[case.id] = {"label": CASES[case.id], "service": case.service_id, "as_of": case.as_of.isoformat(),
                            "request": body}
    return out


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, example in examples().items():
        (OUT / f"{name}.json").write_text(json.dumps(example, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
