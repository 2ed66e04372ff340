"""The CDS committee console: sign-in, overview, scenarios, decisions, knowledge (server-rendered HTML)."""
