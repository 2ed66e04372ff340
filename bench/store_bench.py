"""Cost of the store's writes: ``python bench/store_bench.py [N] [--postgres URL]``.

Measures, per call, on a SQLite file (WAL) in a temporary directory and on PostgreSQL (the URL
given, or a temporary cluster started like the tests do): ``record_decision`` (two cards),
``record_feedback`` (one entry, durable commit), ``remember_jti``, and the same writes with the
durability switched the other way, to show what the choice in cds_service/audit/sqlite.py and postgres.py costs or saves.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cds_service.audit.records import CardRecord, DecisionRecord, patient_hash  # noqa: E402
from cds_service.audit.store import Store  # noqa: E402


class _Forced(Store):
    """A store whose every write transaction is durable (``True``) or not (``False``)."""

    forced: bool = False

    def _run(self, fn, *, durable=False, schema_lock=False, readonly=False, retry=True):
        return super()._run(fn, durable=self.forced, schema_lock=schema_lock, readonly=readonly, retry=retry)


def _record(key: bytes, n: int) -> DecisionRecord:
    return DecisionRecord(
        decided_at=datetime.now(timezone.utc), service_id="onc-imaging-order-select", hook="order-select",
        hook_instance=str(uuid.uuid4()), patient_hash=patient_hash(key, f"p{n}"),
        order_codes=("http://www.ama-assn.org/go/cpt|71260",), order_ref=f"ServiceRequest/{n}",
        scenario_id="lung-nsclc-surveillance", rating="usually-appropriate", pama_rating="appropriate",
        outcome="rated", knowledge_version="bench", consult_id=f"urn:uuid:{uuid.uuid4()}", latency_ms=1.0,
        cards=(CardRecord(str(uuid.uuid4()), "info", "s", (str(uuid.uuid4()),)),
               CardRecord(str(uuid.uuid4()), "warning", "t")),
        instance="bench:1",
    )


def _time(fn, n: int) -> str:
    fn(-1)  # warm-up (connection, prepared statements)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return f"median {statistics.median(samples):8.0f} µs   p90 {samples[int(len(samples) * 0.9)]:8.0f} µs"


def bench(url: str, n: int) -> None:
    store = Store.from_url(url)
    store.init_schema()
    key = store.audit_key()
    exp = datetime.now(timezone.utc) + timedelta(minutes=5)
    print(f"\n{store.backend}: {n} calls each")
    print("  record_decision (as shipped)      ", _time(lambda i: store.record_decision(_record(key, i)), n))
    print("  record_feedback (as shipped)      ", _time(lambda i: store.record_feedback(
        "svc", [{"card": str(uuid.uuid4()), "outcome": "accepted", "acceptedSuggestions": [{"id": "x"}],
                 "outcomeTimestamp": "2025-01-01T00:00:00Z"}]), n))
    print("  remember_jti                      ", _time(lambda i: store.remember_jti("iss", str(uuid.uuid4()), exp), n))
    for forced in (True, False):
        # PostgreSQL "not durable": the session runs with synchronous_commit=off.
        other = _Forced.from_url(url if forced or store.backend == "sqlite" else _without_sync_commit(url))
        other.forced = forced
        label = "durable" if forced else "not durable"
        print(f"  record_decision ({label:11})     ", _time(lambda i: other.record_decision(_record(key, i)), n))
        print(f"  record_feedback ({label:11})     ", _time(lambda i: other.record_feedback(
            "svc", [{"card": str(uuid.uuid4()), "outcome": "overridden", "overrideReason": {"userComment": "c"},
                     "outcomeTimestamp": "2025-01-01T00:00:00Z"}]), n))
        other.close()
    store.close()


def _without_sync_commit(url: str) -> str:
    from tests.pg_harness import pg_schema_url

    return pg_schema_url(url, "public").replace("search_path%3Dpublic", "synchronous_commit%3Doff")


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv and argv[0].isdigit() else 300
    pg_url = argv[argv.index("--postgres") + 1] if "--postgres" in argv else ""
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/bench.sqlite3", n)
    if pg_url:
        bench(pg_url, n)
        return 0
    from tests.pg_harness import TemporaryCluster, find_server_bin

    bindir = find_server_bin()
    if bindir is None:
        print("\nPostgreSQL: no server binaries found; pass --postgres URL")
        return 0
    cluster = TemporaryCluster(bindir)
    try:
        bench(cluster.start(), n)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
