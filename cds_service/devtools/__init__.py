"""Developer tools that production never imports: the fixture replay and the fixture FHIR server."""
