"""Production entry point: ``gunicorn -c python:cds_service.server.gunicorn_conf cds_service.server.wsgi:app``.

Importing this module builds the app from ``CDS_*`` variables in **production** mode unless
``CDS_MODE`` says otherwise, runs one representative hook call per service through the whole
decision pipeline (nothing is written to the audit store, nothing is counted in the metrics, no
FHIR server is called), then freezes the garbage collector. With gunicorn's ``preload_app`` this
all happens once in the master, before the workers are forked, so:

* the first clinical request of every worker does not pay for lazy imports, model classes,
  compiled JSON schemas or knowledge indexes;
* no database connection is inherited by the workers (each opens its own);
* ``gc.freeze()`` moves everything built so far into a permanent generation that the collector no
  longer scans, so workers neither spend time on it (tail latency) nor touch its pages (which would
  un-share the copy-on-write memory);
* cyclic garbage collection is moved out of requests: it runs after each response has been sent
  (:mod:`cds_service.server.garbage`).
"""

from __future__ import annotations

import gc
import logging
import os

from cds_service.server.app import create_app
from cds_service.config import PRODUCTION, Settings
from cds_service.server.garbage import collect_between_requests

log = logging.getLogger("cds_service.server.wsgi")


def settings_from_env() -> Settings:
    """``Settings.from_env()``, but production unless ``CDS_MODE`` is set."""
    environ = dict(os.environ)
    environ.setdefault("CDS_MODE", PRODUCTION)
    return Settings.from_env(environ)


def release_connections_before_fork(store) -> None:
    """Close the database connections the master opened (schema, audit key, warm-up).

    gunicorn forks the workers from this process: a pooled connection inherited by several
    workers would be one PostgreSQL session (or one SQLite handle) used by all of them at once.
    (The store also forgets connections inherited across a fork, as a second guard.)
    """
    store.close_idle_connections()


app = create_app(settings_from_env())
release_connections_before_fork(app.extensions["cds"].store)
# Everything allocated so far lives as long as the process: take it out of the collector's scans.
gc.collect()
gc.freeze()
# And collect what requests leave behind after their answers are sent, not while the EHR waits.
app.wsgi_app = collect_between_requests(app.wsgi_app)  # type: ignore[method-assign]
