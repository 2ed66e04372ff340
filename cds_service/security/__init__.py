"""Who may call us: JWT verification of CDS Clients (issuer allow-list, key sets, claims, replay)."""
