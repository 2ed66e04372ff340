"""Cards: order assessments → CDS Hooks cards, one-click suggestions and PAMA rating actions."""
