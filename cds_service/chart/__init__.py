"""Chart facts: FHIR JSON from the prefetch and the draft orders → coded, dated facts. No medicine."""
