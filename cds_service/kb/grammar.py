"""The vocabulary of the criteria grammar (docs/knowledge.md, "Criteria"), shared by the model,
the loader's checks and the compiled indexes."""

from __future__ import annotations

from typing import Any, Mapping

#: A criterion as the author wrote it: exactly one operator key plus that operator's options.
Criterion = Mapping[str, Any]

#: The operators; each criterion has exactly one.
OPERATOR_NAMES = ("all", "any", "not", "ref", "condition", "procedure", "medication", "observation",
                  "marker_trend", "device", "allergy", "finding", "imaging", "stage", "order_reason")
#: Operators whose value names a value set.
VALUESET_OPERATORS = ("condition", "procedure", "medication", "observation", "marker_trend", "device", "allergy",
                      "finding", "stage", "order_reason")
#: Options that name a value set too.
VALUESET_OPTIONS = ("value_in", "reason_in", "safety_in", "safety_not_in")
