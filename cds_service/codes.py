"""Identifiers this service emits: the Argonaut PAMA extensions and the service's own code systems.

The service's code systems are documented in docs/api.md ("Code systems") and published as FHIR
CodeSystem resources in docs/fhir/.
"""

PAMA_RATING = "http://fhir.org/argonaut/Extension/pama-rating"
PAMA_RATING_SYSTEM = "http://fhir.org/argonaut/CodeSystem/pama-rating"
PAMA_QCDSM_CONSULTED = "http://fhir.org/argonaut/Extension/pama-rating-qcdsm-consulted"
PAMA_CONSULT_ID = "http://fhir.org/argonaut/Extension/pama-rating-consult-id"
PAMA_AUC_APPLIED = "http://fhir.org/argonaut/Extension/pama-rating-auc-applied"
PAMA_EXTENSIONS = frozenset({PAMA_RATING, PAMA_QCDSM_CONSULTED, PAMA_CONSULT_ID, PAMA_AUC_APPLIED})

PUBLISHER_BASE = "https://onc-imaging-cds.org/fhir"
#: ACR three-tier rating (usually-appropriate | may-be-appropriate | usually-not-appropriate),
#: sent as the second coding of the pama-rating CodeableConcept.
APPROPRIATENESS_SYSTEM = f"{PUBLISHER_BASE}/CodeSystem/acr-appropriateness"
#: Reasons a clinician may give for overriding a card.
OVERRIDE_REASON_SYSTEM = f"{PUBLISHER_BASE}/CodeSystem/override-reason"
#: ``pama-rating-auc-applied`` value: ``{AUC_APPLIED_BASE}/{scenario id}`` names the criteria variant.
AUC_APPLIED_BASE = f"{PUBLISHER_BASE}/auc"
