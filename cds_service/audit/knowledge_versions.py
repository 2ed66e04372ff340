"""The knowledge versions the service has run with: a digest and a snapshot of each, kept in the audit.

Written once per (version, digest) when a service starts, so the committee can see what changed
between two versions that made decisions, even after the older one is no longer installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from cds_service.audit.store import Store


@dataclass(frozen=True)
class SeenVersion:
    version: str
    digest: str
    first_seen: datetime


def remember(store: Store, version: str, digest: str, snapshot: dict) -> None:
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))

    def write(tx) -> None:
        tx.execute("INSERT INTO knowledge_versions (version, digest, first_seen, snapshot) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (version, digest) DO NOTHING",
                   (version, digest, tx.ts(datetime.now(timezone.utc)), text))

    store.run(write)


def seen(store: Store) -> list[SeenVersion]:
    def read(tx) -> list[SeenVersion]:
        return [SeenVersion(r[0], r[1], tx.from_ts(r[2])) for r in tx.execute(
            "SELECT version, digest, first_seen FROM knowledge_versions ORDER BY first_seen, version")]

    return store.run(read, readonly=True)


def snapshot(store: Store, digest: str) -> dict | None:
    row = store.run(lambda tx: tx.execute("SELECT snapshot FROM knowledge_versions WHERE digest = ?",
                                          (digest,)).fetchone(), readonly=True)
    return json.loads(row[0]) if row else None
