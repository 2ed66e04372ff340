"""The committee console over a million decisions:
``python bench/console_bench.py [N] [--postgres URL] [--no-sqlite] [--no-postgres]``.

Seeds N decisions (default 1,000,000) over 365 days, with cards on about a third and feedback
(accepted or overridden, with reasons) on about two thirds of those cards, into a SQLite file and
into PostgreSQL (the URL given, or a throw-away cluster started like the tests do). Loading is in
bulk (executemany / COPY), then the rollups are computed once (``rollup.rebuild``, timed: this is
what migration 2 does to an existing audit). Then each console query is timed (median of 5):
the overview of the last 30 days and of the whole year, the scenario table, a scenario page, the
first decision page, a filtered decision page, one decision. As a baseline in the same run, the
overview's counts are computed directly from the decision rows (what the console would cost
without rollups), and the ratio is printed.

Run of 2026-12-01 (development VM, 2 shared cores under load from other jobs; SQLite 3.40,
PostgreSQL 15 throw-away cluster with 32 MB shared buffers), 1,000,000 decisions, medians in ms:

==============================  ========  ==========
query                             SQLite  PostgreSQL
==============================  ========  ==========
overview, last 30 days              37.8        26.6
overview, whole year               285.0       265.7
scenario table, whole year          19.0        13.8
scenario page, whole year           29.7        24.5
decisions, first page                0.8         2.4
decisions, filtered, page 3          1.3         3.3
one decision                         0.1         1.0
baseline: counts from the rows    9117.9      3126.9
==============================  ========  ==========

Rollups computed once from the rows (migration 2 on an existing audit): 88.7 s SQLite, 6.1 s
PostgreSQL. The whole-year overview is mostly the latency histogram (≈ 44,000 day × bucket rows);
its cost depends on the number of days, not of decisions.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cds_service.audit import analytics, decision_queries, rollup  # noqa: E402
from cds_service.audit.store import Store  # noqa: E402

SCENARIOS = ("breast-distant-surveillance-asymptomatic", "rectal-post-treatment-surveillance",
             "spine-metastasis-follow-up", "cervix-suspected-recurrence", None)
RATINGS = ("usually-appropriate", "may-be-appropriate", "usually-not-appropriate")
REASONS = ("symptoms-not-recorded", "imaging-done-elsewhere", "patient-informed-choice")
LAST_DAY = date(2026, 11, 30)
DAYS = 365


def rows(n: int):
    """(decision, cards, feedback) rows, generated on the fly (the million never sits in memory)."""
    rnd = random.Random(14)
    start = datetime.combine(LAST_DAY - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=timezone.utc)
    step = DAYS * 86400 / n
    for i in range(1, n + 1):
        at = start + timedelta(seconds=(i - 1) * step)
        scenario = SCENARIOS[i % len(SCENARIOS)]
        rating = RATINGS[rnd.randrange(3)] if scenario else None
        outcome = "rated" if scenario else "no-criteria-apply"
        latency = round(rnd.lognormvariate(1.2, 0.6), 3)
        decision = (i, at, "onc-imaging-order-select" if i % 4 else "onc-imaging-order-sign", "order-select",
                    f"hi-{i}", f"{i % 50000:064x}", '["http://www.ama-assn.org/go/cpt|71260"]', scenario, rating,
                    outcome, "2026.11" if i > n // 2 else "2026.10", latency, "bench")
        cards = [(f"c{i}", i, 0, "warning", "Consider another study", "[]")] if rating and rating != RATINGS[0] else []
        feedback = []
        if cards and i % 3:
            overridden = i % 3 == 2
            feedback.append((at + timedelta(minutes=2), decision[2], f"c{i}", "overridden" if overridden else "accepted",
                             at + timedelta(minutes=1), "[]", REASONS[i % 3] if overridden else None, False, i, "bench"))
        yield decision, cards, feedback


D_COLS = ("id, decided_at, service_id, hook, hook_instance, patient_hash, order_codes, scenario_id, rating, outcome, "
          "knowledge_version, latency_ms, instance")
C_COLS = "uuid, decision_id, position, indicator, summary, suggestion_uuids"
F_COLS = ("received_at, service_id, card_uuid, outcome, outcome_timestamp, accepted_suggestions, override_reason_code, "
          "has_user_comment, decision_id, instance")


def load_sqlite(store: Store, n: int) -> None:
    def iso(v):
        return v.isoformat(timespec="microseconds") if isinstance(v, datetime) else v

    def write(tx):
        batch_d, batch_c, batch_f = [], [], []
        for d, c, f in rows(n):
            batch_d.append(tuple(iso(v) for v in d))
            batch_c.extend(c)
            batch_f.extend(tuple(iso(v) for v in x) for x in f)
            if len(batch_d) >= 50000:
                _flush(tx, batch_d, batch_c, batch_f)
        _flush(tx, batch_d, batch_c, batch_f)

    store.run(write)


def _flush(tx, d, c, f) -> None:
    tx.conn.executemany(f"INSERT INTO decisions ({D_COLS}) VALUES ({', '.join('?' * 13)})", d)
    tx.conn.executemany(f"INSERT INTO cards ({C_COLS}) VALUES (?, ?, ?, ?, ?, ?)", c)
    tx.conn.executemany(f"INSERT INTO feedback ({F_COLS}) VALUES ({', '.join('?' * 10)})", f)
    d.clear(), c.clear(), f.clear()


def load_postgres(store: Store, n: int) -> None:
    """COPY, one table at a time (one connection runs one COPY at once); :func:`rows` is repeatable."""
    tables = ((f"COPY decisions ({D_COLS}) FROM STDIN", lambda d, c, f: [d]),
              (f"COPY cards ({C_COLS}) FROM STDIN", lambda d, c, f: c),
              (f"COPY feedback ({F_COLS}) FROM STDIN", lambda d, c, f: f))

    def write(tx):
        for statement, pick in tables:
            with tx.conn.cursor().copy(statement) as copy:
                for d, c, f in rows(n):
                    for row in pick(d, c, f):
                        copy.write_row(row)
        tx.conn.execute("SELECT setval(pg_get_serial_sequence('decisions', 'id'), (SELECT MAX(id) FROM decisions))")

    store.run(write)
    store.run(lambda tx: tx.conn.execute("ANALYZE"))


def raw_overview(store: Store, start: date, end: date) -> int:
    """The baseline: the overview's counts straight from the rows (no rollups)."""
    def read(tx):
        lo = tx.ts(datetime.combine(start, datetime.min.time()))
        hi = tx.ts(datetime.combine(end + timedelta(days=1), datetime.min.time()))
        a = tx.execute("SELECT outcome, rating, COUNT(*) FROM decisions WHERE decided_at >= ? AND decided_at < ? "
                       "GROUP BY outcome, rating", (lo, hi)).fetchall()
        b = tx.execute("SELECT COUNT(*) FROM cards c JOIN decisions d ON d.id = c.decision_id "
                       "WHERE d.decided_at >= ? AND d.decided_at < ?", (lo, hi)).fetchall()
        f = tx.execute("SELECT f.outcome, f.override_reason_code, COUNT(*) FROM feedback f JOIN decisions d "
                       "ON d.id = f.decision_id WHERE d.decided_at >= ? AND d.decided_at < ? "
                       "GROUP BY f.outcome, f.override_reason_code", (lo, hi)).fetchall()
        lat = tx.execute("SELECT latency_ms FROM decisions WHERE decided_at >= ? AND decided_at < ? "
                         "ORDER BY latency_ms", (lo, hi)).fetchall()
        return len(a) + len(b) + len(f) + len(lat)
    return store.run(read, readonly=True)


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(name: str, store: Store, n: int, load) -> None:
    store.init_schema()
    t0 = time.perf_counter()
    load(store, n)
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.run(rollup.rebuild)
    rebuilt = time.perf_counter() - t0
    count = store.run(lambda tx: tx.execute("SELECT COUNT(*) FROM decisions").fetchone()[0], readonly=True)
    print(f"\n{name}: {count:,} decisions loaded in {loaded:.1f} s; rollups rebuilt in {rebuilt:.1f} s")
    month, year = LAST_DAY - timedelta(days=29), LAST_DAY - timedelta(days=DAYS - 1)
    fig = analytics.figures(store, year, LAST_DAY)
    assert fig.orders == count, (fig.orders, count)
    middle = store.run(lambda tx: tx.execute("SELECT MAX(id) / 2 FROM decisions").fetchone()[0], readonly=True)
    cases = {
        "overview, last 30 days": lambda: analytics.figures(store, month, LAST_DAY),
        "overview, whole year": lambda: analytics.figures(store, year, LAST_DAY),
        "scenario table, whole year": lambda: analytics.scenario_table(store, year, LAST_DAY),
        "scenario page, whole year": lambda: analytics.figures(store, year, LAST_DAY,
                                                               scenario="rectal-post-treatment-surveillance"),
        "decisions, first page": lambda: decision_queries.decision_page(
            store, decision_queries.DecisionFilter(year, LAST_DAY), 0),
        "decisions, filtered, page 3": lambda: decision_queries.decision_page(store, decision_queries.DecisionFilter(
            month, LAST_DAY, scenario="spine-metastasis-follow-up", rating="usually-not-appropriate"), 2),
        "one decision": lambda: decision_queries.decision_detail(store, middle),
    }
    for label, fn in cases.items():
        print(f"  {label:<32} {timed(fn):9.1f} ms")
    baseline = timed(lambda: raw_overview(store, year, LAST_DAY), repeat=3)
    with_rollups = timed(lambda: analytics.figures(store, year, LAST_DAY))
    print(f"  baseline: same counts from the rows {baseline:9.1f} ms  (rollups {baseline / with_rollups:.1f}x faster)")


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv and argv[0].isdigit() else 1_000_000
    pg_url = argv[argv.index("--postgres") + 1] if "--postgres" in argv else None
    if "--no-sqlite" not in argv:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.from_url(f"sqlite:///{tmp}/bench.sqlite3")
            measure("SQLite", store, n, load_sqlite)
            store.close()
    if "--no-postgres" in argv:
        return 0
    cluster = None
    if pg_url is None:
        from tests.pg_harness import TemporaryCluster, find_server_bin

        bindir = find_server_bin()
        if bindir is None:
            print("\nPostgreSQL: no server binaries (run .ci/postgres.sh or give --postgres URL)")
            return 0
        cluster = TemporaryCluster(bindir)
        pg_url = cluster.start()
    try:
        store = Store.from_url(pg_url)
        measure("PostgreSQL", store, n, load_postgres)
        store.close()
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
