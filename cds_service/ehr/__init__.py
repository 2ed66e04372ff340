"""Outbound access to the EHR: the allow-listed FHIR client and prefetch completion."""
