"""CMDB write throughput: full close_change records and audit-log rows per second.

Each record is its own transaction, as an activity writes it. Runs on SQLite (a temp
file) and on PostgreSQL (a throw-away schema), one writer and several concurrent
writers (a worker runs activities in parallel threads).

    PYTHONPATH=. python bench/cmdb_bench.py [-n 2000] [--threads 1 8] [--pg-url URL] [--no-pg]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from relman.cmdb import CmdbStore
from relman.contracts import (
    Approval,
    ChangeType,
    CloseChangeInput,
    CloseCode,
    Decision,
    Feedback,
    Gate,
    Outcome,
    ReleaseRequest,
    Risk,
    Vote,
)

PG_URL = os.environ.get("RELMAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def close_input(i: int, run: str) -> CloseChangeInput:
    """A full record: deployed version, two approvals, KPIs and feedback."""
    now = datetime.now(UTC)
    version = f"1.{i // 1000}.{i % 1000}"
    request = ReleaseRequest(
        service=f"svc-{i % 20:02d}",
        version=version,
        change_type=ChangeType.NORMAL,
        requested_by="alice",
        title=f"release {i}",
        commit=f"{i:07x}",
        committed_at=now - timedelta(hours=3),
    )
    votes = [
        Approval(
            vote=Vote(gate=Gate.REQUEST, approver=who, decision=Decision.APPROVE, approved_hash="a" * 64),
            at=now,
        )
        for who in ("bob", "carol")
    ]
    return CloseChangeInput(
        release_id=f"rel-{run}-{i}",
        step="close",
        request=request,
        risk=Risk.MEDIUM,
        outcome=Outcome.COMPLETED,
        close_code=CloseCode.SUCCESSFUL,
        ci_name=request.service,
        deployed_version=version,
        previous_version="0.9.0",
        artifact_digest="b" * 64,
        approvals=votes,
        kpis={"error_rate": 0.001, "latency_ms": 120.0},
        feedback=[Feedback(by="dave", rating=5, comment="smooth")],
        production_at=now,
    )


def timed(n: int, threads: int, write: Callable[[int], object]) -> float:
    """Records per second of `write(i)` for i < n, spread over `threads` threads."""
    start = time.perf_counter()
    if threads == 1:
        for i in range(n):
            write(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, range(n), chunksize=16))
    return n / (time.perf_counter() - start)


def bench(store: CmdbStore, n: int, threads: list[int]) -> list[tuple[str, int, float]]:
    rows: list[tuple[str, int, float]] = []
    store.append_audit("warm-up", actor="bench", action="bench", subject="warm-up")
    for t in threads:
        run = uuid.uuid4().hex[:8]
        inputs = [close_input(i, run) for i in range(n)]  # built up front: time the store only

        def close(i: int, inputs: list[CloseChangeInput] = inputs) -> bool:
            return store.close_change(inputs[i])

        def audit(i: int, run: str = run) -> bool:
            return store.append_audit(f"{run}/{i}", actor="bench", action="bench.audit", subject=f"s{i}")

        before = store.count("change")
        rate = timed(n, t, close)
        if store.count("change") - before != n:
            raise SystemExit("close_change did not write exactly one change per record")
        rows.append(("close_change", t, rate))
        rate = timed(n, t, audit)
        rows.append(("audit row", t, rate))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="records per measurement (default 2000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8], help="writer threads (default 1 8)")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()

    results: list[tuple[str, str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = CmdbStore(f"sqlite:///{tmp}/cmdb.db")
        results += [("sqlite", *r) for r in bench(store, args.n, args.threads)]
        store.close()
    if not args.no_pg:
        store = CmdbStore(args.pg_url, schema=f"bench_{uuid.uuid4().hex[:12]}")
        try:
            results += [("postgresql", *r) for r in bench(store, args.n, args.threads)]
        except Exception as exc:  # report and keep the SQLite numbers
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        finally:
            try:
                store.drop()
            finally:
                store.close()

    print(f"\nCMDB writes, N={args.n} per row, one transaction per record\n")
    print(f"{'database':<11} {'write':<13} {'threads':>7} {'records/s':>10}  goal >= 1000")
    for db, what, threads, rate in results:
        print(f"{db:<11} {what:<13} {threads:>7} {rate:>10,.0f}  {'ok' if rate >= 1000 else 'MISSED'}")


if __name__ == "__main__":
    main()
