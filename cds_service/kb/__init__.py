"""The knowledge base as code: its typed model, the loader of the knowledge/ data files, and their checks.

The data lives in the top-level knowledge/ folder (installed as cds_service.knowledge_data); this
package only reads and checks it. It knows no HTTP.
"""
