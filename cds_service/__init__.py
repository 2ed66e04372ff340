"""CDS Hooks 2.0 service rating imaging orders in cancer follow-up (see README.md)."""

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]


def create_app(*args, **kwargs):
    """Build the Flask application (see :func:`cds_service.server.app.create_app`)."""
    from cds_service.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)
