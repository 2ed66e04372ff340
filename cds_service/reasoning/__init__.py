"""Scenario matching and rating: knowledge criteria over chart facts → an assessment per order. No HTTP."""
