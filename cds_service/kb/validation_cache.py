"""Remembering which knowledge files already passed schema validation, by content hash.

Schema validation is almost all of the cost of loading knowledge (93 % with a thousand extra
scenario files), and a file whose bytes have not changed since it was validated against the same
schema cannot have become invalid. The cache therefore holds SHA-256 digests of
(schema digest, file kind, file bytes) that validated; a file whose digest is listed skips the
schema but not the reference checks, which look across files. Only valid files are ever listed,
so a changed, broken or unknown file is always validated and reported. The cache is a plain JSON
file written atomically; if it cannot be read or written the loader simply validates everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_FILE = "knowledge-validated.json"
#: Enough for every version of a large knowledge base that a machine sees; older entries go first.
MAX_ENTRIES = 200_000


class ValidationCache:
    """Digests of knowledge files known to be valid. ``trust=False`` records without skipping
    (``check-knowledge`` validates everything and leaves the cache warm for the next start)."""

    def __init__(self, directory: str | Path, schema_digest: str, *, trust: bool = True):
        self.path = Path(directory) / CACHE_FILE
        self.trust = trust
        self._schema_digest = schema_digest
        self._known = self._read()
        self._added: list[str] = []

    def digest(self, kind: str, content: bytes) -> str:
        return hashlib.sha256(f"{self._schema_digest}\0{kind}\0".encode() + content).hexdigest()

    def known_valid(self, digest: str) -> bool:
        return self.trust and digest in self._known

    def add(self, digest: str) -> None:
        if digest not in self._known:
            self._known[digest] = None
            self._added.append(digest)

    def save(self) -> None:
        """Write the cache if anything was added (atomically: a reader never sees half a file)."""
        if not self._added:
            return
        entries = list(self._known)[-MAX_ENTRIES:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as out:
                json.dump(entries, out)
            os.replace(out.name, self.path)
            self._added = []
        except OSError as error:
            log.info("knowledge validation cache not written: %s", type(error).__name__)

    def _read(self) -> dict[str, None]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(entries, list):
            return {}
        return dict.fromkeys(e for e in entries if isinstance(e, str) and len(e) == 64)
