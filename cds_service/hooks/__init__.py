"""The CDS Hooks 2.0 protocol: request and response models, services, schemas, prefetch templates.

This room knows no medicine.
"""
