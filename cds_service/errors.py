"""One exception family for everything the HTTP layer turns into a 4xx answer.

Modelled on fhir-py's single exception hierarchy: code raises the class that says what went
wrong, and ``web`` maps the class to a status with one error handler.
"""

from __future__ import annotations


class CdsError(Exception):
    """Base class; ``status`` is the HTTP status the web layer answers with."""

    status = 400
    #: Short machine-readable label, returned as ``error`` in the JSON body.
    code = "invalid-request"

    def __init__(self, message: str = "", *, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(CdsError):
    status = 400
    code = "invalid-request"


class Unauthorized(CdsError):
    """JWT missing or rejected. The web layer answers 401 without any detail (CDS Hooks best practice)."""

    status = 401
    code = "unauthorized"


class UnknownService(CdsError):
    status = 404
    code = "unknown-service"


class PayloadTooLarge(CdsError):
    status = 413
    code = "payload-too-large"


class PrefetchUnavailable(CdsError):
    """Needed FHIR data was neither prefetched nor retrievable (CDS Hooks 2.0: SHALL answer 412)."""

    status = 412
    code = "prefetch-unavailable"


class FhirServerNotAllowed(PrefetchUnavailable):
    """The request named a FHIR server outside the allow-list; no call was made."""

    code = "fhir-server-not-allowed"


class FhirFetchFailed(PrefetchUnavailable):
    """A FHIR server on the allow-list could not deliver the data (timeout, error status, bad body)."""

    code = "fhir-fetch-failed"


class ServiceUnavailable(CdsError):
    """Something the service depends on (its database) cannot serve now; retry after ``retry_after`` s."""

    status = 503
    code = "service-unavailable"

    def __init__(self, message: str = "", *, retry_after: int = 5, details: list[str] | None = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after
