"""Audit: the decision record (no PHI), its storage in SQLite or PostgreSQL, and the export."""
