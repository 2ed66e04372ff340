"""The CDS Services this application offers, and their discovery document.

Prefetch templates use only ``{{context.patientId}}`` (a root-level primitive context field, as
CDS Hooks 2.0 requires) and plain FHIR search syntax (``_sort=-date``; the spec's own examples use
the invalid ``sort:desc``). They ask for the chart data the reasoning reads: cancer diagnoses and
history, treatments (procedures, and medications however they are recorded: requested, administered
or stated), labs and tumour markers, stage groups and disease status, prior imaging, and MRI/contrast
contraindications (allergies, devices and their use statements).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"

PREFETCH_TEMPLATES: Mapping[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}&_count=200",
    "procedures": "Procedure?patient={{context.patientId}}&_sort=-date&_count=200",
    "labs": "Observation?patient={{context.patientId}}&category=laboratory&_sort=-date&_count=200",
    "diseaseStatus": (
        "Observation?patient={{context.patientId}}"
        "&code=http://loinc.org|97509-4,http://loinc.org|88040-1&_sort=-date&_count=20"
    ),
    "imagingReports": "DiagnosticReport?patient={{context.patientId}}&_sort=-date&_count=100",
    "imagingStudies": "ImagingStudy?patient={{context.patientId}}&_count=100",
    "priorOrders": "ServiceRequest?patient={{context.patientId}}&status=completed&_count=100",
    # TNM stage groups and distant-metastasis (M) categories, coded by SNOMED CT or by the LOINC codes
    # mCODE still allows (HL7/fhir-mCODE-ig input/fsh/VS_Staging_TNM.fsh: TNMStageGroupStagingTypeMaxVS,
    # TNMDistantMetastasesStagingTypeMaxVS).
    "staging": (
        "Observation?patient={{context.patientId}}&code="
        "http://snomed.info/sct|399390009,http://snomed.info/sct|399537006,http://snomed.info/sct|399588009,"
        "http://loinc.org|21908-9,http://loinc.org|21902-2,http://loinc.org|21914-7,"
        "http://snomed.info/sct|277208005,http://snomed.info/sct|399387003,http://snomed.info/sct|371497001,"
        "http://loinc.org|21907-1,http://loinc.org|21901-4,http://loinc.org|21913-9&_sort=-date&_count=50"
    ),
    # Medications coded by reference come with their Medication (``_include``), so their codes can be read.
    "medications": "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication&_count=100",
    "medicationAdministrations": (
        "MedicationAdministration?patient={{context.patientId}}"
        "&_include=MedicationAdministration:medication&_count=100"
    ),
    "medicationStatements": (
        "MedicationStatement?patient={{context.patientId}}&_include=MedicationStatement:medication&_count=100"
    ),
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "devices": "Device?patient={{context.patientId}}",
    "deviceUseStatements": "DeviceUseStatement?patient={{context.patientId}}&_include=DeviceUseStatement:device",
}

#: Context fields each hook requires (HL7 cds-hooks-library order-select 1.0 / order-sign 1.0).
REQUIRED_CONTEXT: Mapping[str, tuple[str, ...]] = {
    ORDER_SELECT: ("userId", "patientId", "selections", "draftOrders"),
    ORDER_SIGN: ("userId", "patientId", "draftOrders"),
}


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str] = field(default_factory=lambda: dict(PREFETCH_TEMPLATES))
    usage_requirements: str | None = None

    def discovery_entry(self) -> dict:
        entry = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": dict(self.prefetch),
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


_USAGE = (
    "Send draft imaging orders as ServiceRequests coded in CPT (or LOINC/SNOMED CT) with reasonCode "
    "in SNOMED CT or ICD-10-CM; the service also reads the prefetched chart."
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="onc-imaging-order-select",
        hook=ORDER_SELECT,
        title="Oncology follow-up imaging appropriateness (order select)",
        description=(
            "Rates the selected imaging order against ACR Appropriateness Criteria for cancer "
            "follow-up scenarios read from the chart, suggests the Usually Appropriate study, and "
            "warns about low-value surveillance scans."
        ),
        usage_requirements=_USAGE,
    ),
    ServiceDefinition(
        id="onc-imaging-order-sign",
        hook=ORDER_SIGN,
        title="Oncology follow-up imaging appropriateness (order sign)",
        description=(
            "Rates every imaging order being signed against ACR Appropriateness Criteria for cancer "
            "follow-up scenarios read from the chart, and attaches a machine-readable rating to each."
        ),
        usage_requirements=_USAGE,
    ),
)

SERVICES_BY_ID: Mapping[str, ServiceDefinition] = {s.id: s for s in SERVICES}


def discovery_document() -> dict:
    """``GET /cds-services`` body, sorted by id so the answer is deterministic."""
    return {"services": [s.discovery_entry() for s in sorted(SERVICES, key=lambda s: s.id)]}
