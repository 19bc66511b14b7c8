"""The CMDB store: SQLAlchemy 2 (sync) over SQLite (default) or PostgreSQL.

Exactly once. Every write is keyed by an idempotency key (the activity's
`release_id/step`). The first statement of a write's transaction inserts the audit
row under that key with "insert if absent"; when the key is already there the
effect was applied before and the write returns without touching anything. The
audit row and the effect commit together, so a retried or replayed activity leaves
exactly one row per effect. Natural keys (CI name, release id, window name,
approval vote, CI version) are unique too, so writes under different keys upsert.

The audit log is hash-chained (relman/cmdb/audit_chain.py). The claim is still one
statement: it reads the chain's head, hashes the row in SQL and inserts it, holding
the chain until its transaction ends (SQLite: the write lock BEGIN IMMEDIATE took;
PostgreSQL: an advisory lock the statement takes), so concurrent writers, in threads
or processes, append one after another. `verify_audit` checks the chain, and the row
each release's signed evidence anchors (`audit_head` when it was signed).

Deployment windows. A window applies to a query when its service is the query's or
NULL (all) and its environment is the query's or NULL (all); it is active at `at`
when `start <= at < end`. Deployment is closed when an applicable *blackout* is
active, or an applicable *freeze* is active and the change is not an emergency.
When closed, `next_open` is the end of the closing windows, followed through chains
and overlaps: while another closing window is active at that end, move to its end.
*Maintenance* windows are recorded and listed (and named in the decision's reason)
but never close deployment. Otherwise deployment is open.

SQLite runs in WAL mode with a busy timeout; write transactions start with
`BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of failing
on a lock upgrade. The schema (and the append-only triggers of the audit log) is
created on first use. Secrets are never stored: detail keys that look like secrets
are masked and the database URL's password never appears in errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Engine,
    Row,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    create_engine,
    event,
    exc,
    func,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from relman.cmdb import dora as dora_
from relman.cmdb import pg
from relman.cmdb.audit_chain import GENESIS, Anchor, AuditVerification, ChainRow, check_chain, template
from relman.cmdb.errors import CmdbConflict, CmdbError, CmdbInvalid, CmdbNotFound, CmdbUnavailable
from relman.cmdb.models import (
    ApprovalRow,
    AuditLog,
    Change,
    CiVersion,
    ConfigurationItem,
    DeploymentWindow,
    EnvironmentLease,
    EvidenceRow,
    Relationship,
    RelationshipType,
    ReviewRecord,
    UtcDateTime,
    metadata,
    upgrade,
)
from relman.cmdb.records import (
    ApprovalRecord,
    AuditEntry,
    ChangeDetail,
    ChangeRecord,
    CiRecord,
    CiSpec,
    CiVersionRecord,
    RelationshipRecord,
    ReviewRecordOut,
    WindowSpec,
)
from relman.contracts import (
    AuditAnchor,
    ChangeRecordInput,
    ChangeType,
    CloseChangeInput,
    Criticality,
    EvidenceRecord,
    Feedback,
    LeaseDecision,
    LeaseInput,
    Outcome,
    WindowDecision,
    WindowKind,
    WindowQuery,
)

CI = metadata.tables[ConfigurationItem.__tablename__]
REL = metadata.tables[Relationship.__tablename__]
REL_TYPE = metadata.tables[RelationshipType.__tablename__]
VERSION = metadata.tables[CiVersion.__tablename__]
CHANGE = metadata.tables[Change.__tablename__]
APPROVAL = metadata.tables[ApprovalRow.__tablename__]
LEASE = metadata.tables[EnvironmentLease.__tablename__]
WINDOW = metadata.tables[DeploymentWindow.__tablename__]
REVIEW = metadata.tables[ReviewRecord.__tablename__]
AUDIT = metadata.tables[AuditLog.__tablename__]
EVIDENCE = metadata.tables[EvidenceRow.__tablename__]

DEFAULT_RELATIONSHIP_TYPES = [
    ("depends_on", "depends on", "is depended on by"),
    ("runs_on", "runs on", "hosts"),
]
DEPLOYED_OUTCOMES = frozenset({Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES})
CLOSED = "closed"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.IGNORECASE)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _scrub(detail: Any) -> Any:
    """Mask values whose key names a secret, at any depth."""
    if isinstance(detail, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _scrub(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_scrub(v) for v in detail]
    return detail


class StoredEvidence(BaseModel):
    """A release's evidence as the CMDB keeps it."""

    envelope: dict[str, Any]
    envelope_sha256: str
    key_id: str
    at: datetime


# The chained claim, as pg.CLAIM on PostgreSQL: id and predecessor read and the row
# inserted in one statement, the hash computed by relman_sha256 (registered on every
# connection) over audit_chain.template's parts. No lock to take: `_write` began with
# BEGIN IMMEDIATE, so the transaction holds SQLite's write lock until it ends.
# (`WHERE true` tells SQLite's parser that ON CONFLICT is the upsert, not a join.)
_SQLITE_CLAIM = text(
    f"""
INSERT INTO audit_log
    (id, at, actor, action, subject, release_id, detail, idempotency_key, prev_hash, row_hash)
SELECT h.next_id, :at, :actor, :action, :subject, :release_id, :detail, :key, h.prev_hash,
    relman_sha256(:hash_head || h.next_id || :hash_middle || h.prev_hash || :hash_tail)
FROM (SELECT coalesce((SELECT max(id) FROM audit_log), 0) + 1 AS next_id,
    coalesce((SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1), '{GENESIS}') AS prev_hash) AS h
WHERE true
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
).bindparams(bindparam("at", type_=UtcDateTime()))


def claim_params(
    key: str,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    release_id: str | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """Bind parameters of the chained claim (`_SQLITE_CLAIM`, pg.CLAIM, pg.CLOSE_CHANGE)."""
    head, middle, tail = template(
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        release_id=release_id,
        detail=detail,
        idempotency_key=key,
    )
    return {
        "key": key,
        "at": _utc(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "release_id": release_id,
        # As the JSON column type would serialize it; jsonb parses it on PostgreSQL.
        "detail": json.dumps(detail),
        "hash_head": head,
        "hash_middle": middle,
        "hash_tail": tail,
    }


def _sha256_hex(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def _chain_row(r: Any) -> ChainRow:
    """An audit row as read by `verify_audit`, for check_chain."""
    at: Any = r.at
    try:
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        if not isinstance(at, datetime):
            raise ValueError(f"time {at!r}")
        detail = json.loads(r.detail)
    except (TypeError, ValueError) as e:
        at, detail, unreadable = datetime.min, None, str(e)[:200]
    else:
        unreadable = ""
    return ChainRow(
        id=r.id,
        at=at,
        actor=r.actor,
        action=r.action,
        subject=r.subject,
        release_id=r.release_id,
        detail=detail,
        idempotency_key=r.idempotency_key,
        prev_hash=r.prev_hash,
        row_hash=r.row_hash,
        unreadable=unreadable,
    )


def _evidence_anchor(release_id: str, envelope: Any) -> Anchor | None:
    """The `audit_anchor` an evidence envelope's payload states, read without checking the
    signature; None for evidence from before anchoring, or a payload that cannot be read
    (relman never writes one: `relman verify` names it)."""
    try:
        payload = str(envelope["payload"]).replace("-", "+").replace("_", "/")
        statement = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True))
        stated = statement["predicate"].get("audit_anchor")
        if stated is None:
            return None
        anchor = AuditAnchor.model_validate(stated)
    except (TypeError, KeyError, AttributeError, ValueError, binascii.Error):  # ValidationError too
        return None
    return Anchor(release_id=release_id, id=anchor.id, row_hash=anchor.row_hash)


class _Statements:
    """The write statements, built once: building SQLAlchemy constructs per call cost more
    CPU than the database's own work (measured with bench/cmdb_bench.py)."""

    def __init__(self, dialect: str) -> None:
        def insert(table: Table) -> Any:
            return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)

        self.claim = pg.CLAIM if dialect == "postgresql" else _SQLITE_CLAIM

        def ci(set_: dict[str, Any]) -> Any:
            return insert(CI).on_conflict_do_update(index_elements=["name"], set_=set_).returning(CI.c.id)

        ex_ci = insert(CI).excluded
        bump = {"row_version": CI.c.row_version + 1, "updated_at": ex_ci.updated_at}
        self.ci_set_criticality = ci({"criticality": ex_ci.criticality, **bump})
        self.ci_set_version = ci({"current_version": ex_ci.current_version, **bump})
        # A no-op update rather than DO NOTHING, so RETURNING yields the id of an existing CI.
        self.ci_id = ci({"name": ex_ci.name})

        ex = insert(CHANGE).excluded
        status = {"status": ex.status, "risk": ex.risk, "ci_id": ex.ci_id, "updated_at": ex.updated_at}

        def change(set_: dict[str, Any]) -> Any:
            # A closed change stays closed: later status updates do not reopen it.
            return insert(CHANGE).on_conflict_do_update(
                index_elements=["release_id"], set_=set_, where=CHANGE.c.status != CLOSED
            )

        self.change_status = change(status)
        self.change_note = change({**status, "reason": ex.reason})
        closing = [
            "ci_id", "risk", "status", "outcome", "close_code", "reason", "previous_version",
            "artifact_digest", "production_at", "failed_at", "recovered_at", "closed_at", "updated_at",
        ]  # fmt: skip
        self.change_close = (
            insert(CHANGE)
            .on_conflict_do_update(
                index_elements=["release_id"],
                set_={
                    **{c: ex[c] for c in closing},
                    "committed_at": func.coalesce(ex.committed_at, CHANGE.c.committed_at),
                },
            )
            .returning(CHANGE.c.id)
        )
        ex_v = insert(VERSION).excluded
        self.ci_version = insert(VERSION).on_conflict_do_update(
            index_elements=["ci_id", "version"],
            set_={c: ex_v[c] for c in ("artifact_digest", "commit", "deployed_at", "release_id")},
        )
        self.approval = insert(APPROVAL).on_conflict_do_nothing(
            index_elements=["change_id", "gate", "approver", "approved_hash"]
        )
        ex_r = insert(REVIEW).excluded
        self.review = insert(REVIEW).on_conflict_do_update(
            index_elements=["change_id"],
            set_={"kpis": ex_r.kpis, "feedback": ex_r.feedback, "at": ex_r.at},
        )


class CmdbStore:
    """The CMDB. Thread-safe; every public method is one short transaction."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        clock: Callable[[], datetime] = _now,
        busy_timeout_s: float = 30.0,
        connect_timeout_s: int = 5,
    ) -> None:
        """`schema` (PostgreSQL only) puts every table in that schema, created if absent."""
        self._url = make_url(url)
        self._schema = schema
        self._clock = clock
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise CmdbInvalid(f"invalid schema name {schema!r}")
        self.dialect = self._url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise CmdbInvalid(f"unsupported CMDB database {self.dialect!r}: use sqlite or postgresql")
        self.engine = self._make_engine(busy_timeout_s, connect_timeout_s)
        self._sql = _Statements(self.dialect)
        self.fast_path = True
        """PostgreSQL: close changes with one statement (relman/cmdb/pg.py); tests turn it off."""
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL without its password, safe to log."""
        return self._url.render_as_string(hide_password=True)

    # --- engine and transactions ---------------------------------------------

    def _make_engine(self, busy_timeout_s: float, connect_timeout_s: int) -> Engine:
        if self.dialect == "postgresql":
            args: dict[str, Any] = {"connect_timeout": connect_timeout_s}
            if self._schema:
                args["options"] = f"-csearch_path={self._schema}"
            return create_engine(self._url, connect_args=args, pool_size=10, max_overflow=20)
        database = self._url.database
        memory = not database or database == ":memory:"
        if not memory and database:
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CmdbUnavailable(f"CMDB at {self.url}: cannot create its directory: {e}") from e
        engine = create_engine(
            self._url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
            # One shared connection for :memory:, else every connection is a new empty db.
            poolclass=StaticPool if memory else None,
        )
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling begins lazily (DEFERRED); we issue BEGIN.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # NORMAL in WAL mode: a commit survives a process crash; fsync at checkpoints.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            dbapi_conn.create_function("relman_sha256", 1, _sha256_hex, deterministic=True)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("relman_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate driver errors: unreachable/busy → CmdbUnavailable, bad data → CmdbInvalid."""
        try:
            yield
        except CmdbError:
            raise
        except (exc.IntegrityError, exc.DataError) as e:
            raise CmdbInvalid(f"CMDB refused the data: {e.orig}") from e
        except (exc.OperationalError, exc.InterfaceError) as e:
            raise CmdbUnavailable(f"CMDB at {self.url} is unavailable: {e.orig}") from e
        except exc.DBAPIError as e:
            if e.connection_invalidated:
                raise CmdbUnavailable(f"CMDB at {self.url} lost its connection: {e.orig}") from e
            raise CmdbError(f"CMDB error: {e.orig}") from e

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            # SQLite: BEGIN IMMEDIATE, so two processes creating the schema queue up.
            with (
                self._errors(),
                self.engine.connect().execution_options(relman_write=True) as conn,
                conn.begin(),
            ):
                if self.dialect == "postgresql":
                    # Serialize concurrent first uses: create_all's check-then-create races.
                    conn.execute(select(func.pg_advisory_xact_lock(0x524D_434D_4442)))
                    if self._schema:
                        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'))
                metadata.create_all(conn)
                upgrade(conn)
                conn.execute(
                    self._insert(REL_TYPE)
                    .values(
                        [
                            dict(name=n, forward_label=f, reverse_label=r)
                            for n, f, r in DEFAULT_RELATIONSHIP_TYPES
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
            self._ready = True

    @contextmanager
    def _write(self, *, autocommit: bool = False) -> Iterator[Connection]:
        """A write transaction; `autocommit` (PostgreSQL) for one atomic statement: saves
        the BEGIN and COMMIT round trips."""
        self._ensure_schema()
        with self._errors(), self.engine.connect() as conn:
            if autocommit and self.dialect == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
                return
            conn.execution_options(relman_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._ensure_schema()
        with self._errors(), self.engine.connect() as conn:
            yield conn

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has `on_conflict_do_nothing/update`."""
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    def close(self) -> None:
        self.engine.dispose()

    def drop(self) -> None:
        """Remove every table (and the schema when one was given): for tests and benchmarks."""
        with self._errors(), self.engine.begin() as conn:
            if self.dialect == "postgresql" and self._schema:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE'))
            else:
                metadata.drop_all(conn)
        self._ready = False

    # --- the audit log (the idempotency claim) -------------------------------

    def _claim(
        self,
        conn: Connection,
        key: str,
        *,
        actor: str,
        action: str,
        subject: str,
        release_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Insert the audit row for `key` if absent, chained to the log's last row; False
        means the effect is already done."""
        params = claim_params(
            key,
            at=self._clock(),
            actor=actor,
            action=action,
            subject=subject,
            release_id=release_id,
            detail=_scrub(detail or {}),
        )
        return conn.execute(self._sql.claim, params).first() is not None

    def append_audit(
        self,
        idempotency_key: str,
        *,
        actor: str,
        action: str,
        subject: str,
        release_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Append one audit row; False when that key was already recorded."""
        with self._write(autocommit=True) as conn:
            return self._claim(
                conn,
                idempotency_key,
                actor=actor,
                action=action,
                subject=subject,
                release_id=release_id,
                detail=detail,
            )

    def audit(self, release_id: str) -> list[AuditEntry]:
        """The audit trail of one release, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(AUDIT).where(AUDIT.c.release_id == release_id).order_by(AUDIT.c.id))
            return [
                AuditEntry(
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    subject=r.subject,
                    release_id=r.release_id,
                    detail=r.detail,
                    idempotency_key=r.idempotency_key,
                )
                for r in rows
            ]

    def audit_head(self) -> AuditAnchor | None:
        """The audit log's newest row (id and hash), None while no chained row exists: what
        the evidence activity signs into a release's evidence as its `audit_anchor`."""
        stmt = select(AUDIT.c.id, AUDIT.c.row_hash).order_by(AUDIT.c.id.desc()).limit(1)
        with self._read() as conn:
            head = conn.execute(stmt).first()
        if head is None or head.row_hash is None:
            return None
        return AuditAnchor(id=head.id, row_hash=head.row_hash)

    def verify_audit(self) -> AuditVerification:
        """Check the whole audit log's hash chain, oldest row first, and every stored
        evidence's `audit_anchor`: the row it names must be in the log with the hash it
        states, or the log is reported broken at that row.

        The chain alone cannot show a rewrite whose author recomputed every later hash, nor
        its newest rows removed; an anchor can, but it counts only because it sits in an
        envelope signed with the worker's evidence key, which this check does not verify
        (`relman verify` does): whoever can rewrite the log can also edit the evidence rows,
        so an anchor found here is trusted as far as that envelope's signature verifies.
        """
        # Time (SQLite) and detail as stored, decoded by _chain_row: a row mangled past
        # decoding (SQLite keeps any value in any column) is then reported, not a crash.
        at = AUDIT.c.at if self.dialect == "postgresql" else type_coerce(AUDIT.c.at, String)
        stmt = select(
            *(c for c in AUDIT.c if c.name not in ("at", "detail")),
            at.label("at"),
            cast(AUDIT.c.detail, Text).label("detail"),
        ).order_by(AUDIT.c.id)
        evidence = select(EVIDENCE.c.release_id, EVIDENCE.c.envelope).order_by(EVIDENCE.c.id)
        with self._read() as conn:
            # Evidence first: every row an envelope anchors was committed before the envelope,
            # so the audit rows read afterwards hold it even without one snapshot for both.
            found = conn.execution_options(yield_per=100).execute(evidence)
            anchors = [a for r in found if (a := _evidence_anchor(r.release_id, r.envelope))]
            rows = conn.execution_options(yield_per=1000).execute(stmt)
            return check_chain((_chain_row(r) for r in rows), anchors)

    # --- change records (the activities' writes) ------------------------------

    def _upsert_ci_id(
        self,
        conn: Connection,
        name: str,
        *,
        criticality: Criticality | None = None,
        current_version: str | None = None,
    ) -> int:
        """Id of CI `name`, created if absent; sets criticality/current version when given."""
        if criticality is not None:
            stmt = self._sql.ci_set_criticality
        elif current_version is not None:
            stmt = self._sql.ci_set_version
        else:
            stmt = self._sql.ci_id
        params = dict(
            name=name,
            ci_class="service",
            description="",
            criticality=(criticality or Criticality.MEDIUM).value,
            current_version=current_version,
            row_version=1,
            updated_at=self._clock(),
        )
        return int(conn.execute(stmt, params).scalar_one())

    def _change_values(self, inp: ChangeRecordInput | CloseChangeInput, ci_id: int) -> dict[str, Any]:
        req = inp.request
        now = self._clock()
        return dict(
            release_id=inp.release_id,
            ci_id=ci_id,
            service=req.service,
            version=req.version,
            change_type=req.change_type.value,
            risk=inp.risk.value,
            requested_by=req.requested_by,
            title=req.title,
            commit=req.commit,
            requested_at=now,
            committed_at=req.committed_at,
            updated_at=now,
            reason="",
        )

    def open_change(self, inp: ChangeRecordInput) -> bool:
        """Record a release's change (status `inp.status`) and upsert its CI; False if a replay."""
        return self._record_change(inp, action="change.open")

    def update_change(self, inp: ChangeRecordInput) -> bool:
        """Set the change's status (and reason from `note`); a closed change stays closed."""
        return self._record_change(inp, action="change.update")

    def _record_change(self, inp: ChangeRecordInput, *, action: str) -> bool:
        detail = {"status": inp.status, "risk": inp.risk.value, "ci": inp.ci_name, "note": inp.note}
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor=inp.request.requested_by if action == "change.open" else "relman",
                action=action,
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            ci_id = self._upsert_ci_id(conn, inp.ci_name, criticality=inp.criticality)
            params = self._change_values(inp, ci_id) | {"status": inp.status, "reason": inp.note}
            conn.execute(self._sql.change_note if inp.note else self._sql.change_status, params)
            return True

    def close_change(self, inp: CloseChangeInput) -> bool:
        """Close the change in one transaction: status, close code, times, CI version, approvals,
        review record and audit row. False if this key was already applied."""
        deployed = inp.deployed_version is not None and inp.outcome in DEPLOYED_OUTCOMES
        ci_name = inp.ci_name or inp.request.service
        if len(ci_name) > 200:
            raise CmdbInvalid(f"CI name longer than 200 characters: {ci_name[:40]}...")
        now = self._clock()
        detail = {
            "outcome": inp.outcome.value,
            "close_code": inp.close_code.value,
            "reason": inp.reason,
            "deployed_version": inp.deployed_version if deployed else None,
            "previous_version": inp.previous_version,
        }
        if self.dialect == "postgresql" and self.fast_path:
            audit = claim_params(
                inp.idempotency_key,
                at=now,
                actor="relman",
                action="change.close",
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=_scrub(detail),
            )
            params = pg.close_params(inp, now=now, ci_name=ci_name, deployed=deployed, audit=audit)
            with self._write(autocommit=True) as conn:
                return bool(conn.execute(pg.CLOSE_CHANGE, params).scalar_one())
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor="relman",
                action="change.close",
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            ci_id = self._upsert_ci_id(
                conn, ci_name, current_version=inp.deployed_version if deployed else None
            )
            change_id = conn.execute(
                self._sql.change_close,
                self._change_values(inp, ci_id)
                | dict(
                    status=CLOSED,
                    outcome=inp.outcome.value,
                    close_code=inp.close_code.value,
                    reason=inp.reason,
                    previous_version=inp.previous_version,
                    artifact_digest=inp.artifact_digest,
                    production_at=inp.production_at,
                    failed_at=inp.failed_at,
                    recovered_at=inp.recovered_at,
                    closed_at=now,
                ),
            ).scalar_one()
            if deployed:
                conn.execute(
                    self._sql.ci_version,
                    dict(
                        ci_id=ci_id,
                        version=inp.deployed_version,
                        artifact_digest=inp.artifact_digest,
                        commit=inp.request.commit,
                        deployed_at=inp.production_at or now,
                        release_id=inp.release_id,
                    ),
                )
            if inp.approvals:
                conn.execute(
                    self._sql.approval,
                    [
                        dict(
                            change_id=change_id,
                            gate=a.vote.gate.value,
                            approver=a.vote.approver,
                            on_behalf_of=a.vote.on_behalf_of,
                            decision=a.vote.decision.value,
                            comment=a.vote.comment,
                            approved_hash=a.vote.approved_hash,
                            at=a.at,
                        )
                        for a in inp.approvals
                    ],
                )
            conn.execute(
                self._sql.review,
                dict(
                    change_id=change_id,
                    kpis=dict(inp.kpis),
                    feedback=[f.model_dump(mode="json") for f in inp.feedback],
                    at=now,
                ),
            )
            return True

    # --- change reads ----------------------------------------------------------

    def _change_select(self) -> Any:
        return select(CHANGE, CI.c.name.label("ci_name")).select_from(
            CHANGE.outerjoin(CI, CHANGE.c.ci_id == CI.c.id)
        )

    @staticmethod
    def _change_fields(r: Row[Any]) -> dict[str, Any]:
        return dict(
            release_id=r.release_id,
            service=r.service,
            version=r.version,
            change_type=r.change_type,
            risk=r.risk,
            status=r.status,
            outcome=r.outcome,
            close_code=r.close_code,
            requested_by=r.requested_by,
            title=r.title,
            ci=r.ci_name,
            commit=r.commit,
            previous_version=r.previous_version,
            artifact_digest=r.artifact_digest,
            requested_at=r.requested_at,
            committed_at=r.committed_at,
            production_at=r.production_at,
            failed_at=r.failed_at,
            recovered_at=r.recovered_at,
            closed_at=r.closed_at,
            reason=r.reason,
        )

    def list_changes(self, since: datetime | None = None, service: str | None = None) -> list[ChangeRecord]:
        """Changes requested at or after `since` (all when None), oldest first."""
        stmt = self._change_select()
        if since is not None:
            stmt = stmt.where(CHANGE.c.requested_at >= _utc(since))
        if service is not None:
            stmt = stmt.where(CHANGE.c.service == service)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(CHANGE.c.requested_at, CHANGE.c.id)).all()
        return [ChangeRecord(**self._change_fields(r)) for r in rows]

    def get_change(self, release_id: str) -> ChangeDetail | None:
        """One change with its approvals and review record."""
        with self._read() as conn:
            r = conn.execute(self._change_select().where(CHANGE.c.release_id == release_id)).first()
            if r is None:
                return None
            approvals = conn.execute(
                select(APPROVAL).where(APPROVAL.c.change_id == r.id).order_by(APPROVAL.c.at, APPROVAL.c.id)
            ).all()
            review = conn.execute(select(REVIEW).where(REVIEW.c.change_id == r.id)).first()
        return ChangeDetail(
            **self._change_fields(r),
            approvals=[
                ApprovalRecord(
                    gate=a.gate,
                    approver=a.approver,
                    on_behalf_of=a.on_behalf_of,
                    decision=a.decision,
                    comment=a.comment,
                    approved_hash=a.approved_hash,
                    at=a.at,
                )
                for a in approvals
            ],
            review=(
                ReviewRecordOut(
                    kpis=review.kpis,
                    feedback=[Feedback.model_validate(f) for f in review.feedback],
                    at=review.at,
                )
                if review is not None
                else None
            ),
        )

    def count(self, table: str) -> int:
        """Rows in one table (tests and benchmarks)."""
        if table not in metadata.tables:
            raise CmdbInvalid(f"unknown table {table!r}")
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())

    # --- configuration items and relationships --------------------------------

    @staticmethod
    def _ci_record(r: Row[Any]) -> CiRecord:
        return CiRecord(
            name=r.name,
            ci_class=r.ci_class,
            description=r.description,
            environment=r.environment,
            owner=r.owner,
            criticality=r.criticality,
            current_version=r.current_version,
            row_version=r.row_version,
            updated_at=r.updated_at,
        )

    def get_ci(self, name: str) -> CiRecord | None:
        with self._read() as conn:
            r = conn.execute(select(CI).where(CI.c.name == name)).first()
        return None if r is None else self._ci_record(r)

    def list_cis(self) -> list[CiRecord]:
        with self._read() as conn:
            return [self._ci_record(r) for r in conn.execute(select(CI).order_by(CI.c.name))]

    def upsert_ci(
        self,
        spec: CiSpec,
        *,
        actor: str = "relman",
        idempotency_key: str | None = None,
        expected_row_version: int | None = None,
    ) -> CiRecord:
        """Create or update a CI by name; unchanged specs write nothing.

        With `expected_row_version`, the update applies only if the row still has that
        version (optimistic locking), else `CmdbConflict`.
        """
        values = dict(
            ci_class=spec.ci_class,
            description=spec.description,
            environment=spec.environment.value if spec.environment else None,
            owner=spec.owner,
            criticality=spec.criticality.value,
        )
        with self._write() as conn:
            current = conn.execute(select(CI).where(CI.c.name == spec.name)).first()
            if expected_row_version is not None and (
                current is None or current.row_version != expected_row_version
            ):
                found = None if current is None else current.row_version
                raise CmdbConflict(f"CI {spec.name!r} is at row version {found}, not {expected_row_version}")
            if current is not None and all(getattr(current, k) == v for k, v in values.items()):
                return self._ci_record(current)
            key = idempotency_key or f"ci.upsert/{uuid.uuid4()}"
            if self._claim(
                conn,
                key,
                actor=actor,
                action="ci.upsert",
                subject=spec.name,
                detail=spec.model_dump(mode="json"),
            ):
                now = self._clock()
                if current is None:
                    conn.execute(CI.insert().values(name=spec.name, row_version=1, updated_at=now, **values))
                else:
                    done = conn.execute(
                        CI.update()
                        .where(CI.c.id == current.id, CI.c.row_version == current.row_version)
                        .values(row_version=CI.c.row_version + 1, updated_at=now, **values)
                    )
                    if done.rowcount != 1:
                        raise CmdbConflict(f"CI {spec.name!r} changed while being updated")
            r = conn.execute(select(CI).where(CI.c.name == spec.name)).one()
            return self._ci_record(r)

    def add_relationship_type(self, name: str, forward_label: str, reverse_label: str) -> None:
        with self._write() as conn:
            conn.execute(
                self._insert(REL_TYPE)
                .values(name=name, forward_label=forward_label, reverse_label=reverse_label)
                .on_conflict_do_update(
                    index_elements=["name"],
                    set_={"forward_label": forward_label, "reverse_label": reverse_label},
                )
            )

    def _ci_id(self, conn: Connection, name: str) -> int:
        ci_id = conn.execute(select(CI.c.id).where(CI.c.name == name)).scalar()
        if ci_id is None:
            raise CmdbNotFound(f"unknown CI {name!r}")
        return int(ci_id)

    def add_relationship(
        self,
        parent: str,
        child: str,
        type: str = "depends_on",
        *,
        actor: str = "relman",
        idempotency_key: str | None = None,
    ) -> bool:
        """Record `parent <type> child` (e.g. checkout depends_on payments-db); False if it existed."""
        if parent == child:
            raise CmdbInvalid(f"a CI cannot relate to itself ({parent!r})")
        with self._write() as conn:
            type_id = conn.execute(select(REL_TYPE.c.id).where(REL_TYPE.c.name == type)).scalar()
            if type_id is None:
                raise CmdbInvalid(f"unknown relationship type {type!r}")
            parent_id, child_id = self._ci_id(conn, parent), self._ci_id(conn, child)
            edge = dict(parent_id=parent_id, child_id=child_id, type_id=type_id)
            exists = conn.execute(select(REL.c.id).where(*(REL.c[k] == v for k, v in edge.items()))).first()
            key = idempotency_key or f"rel.add/{parent}/{type}/{child}/{uuid.uuid4()}"
            if exists or not self._claim(
                conn,
                key,
                actor=actor,
                action="relationship.add",
                subject=parent,
                detail={"parent": parent, "type": type, "child": child},
            ):
                return False
            conn.execute(
                self._insert(REL)
                .values(**edge)
                .on_conflict_do_nothing(index_elements=["parent_id", "child_id", "type_id"])
            )
            return True

    def relationships(self, name: str | None = None) -> list[RelationshipRecord]:
        """All relationships, or those where CI `name` is parent or child."""
        parent, child = CI.alias("p"), CI.alias("c")
        stmt = (
            select(
                parent.c.name.label("parent"),
                child.c.name.label("child"),
                REL_TYPE.c.name.label("type"),
                REL_TYPE.c.forward_label,
            )
            .select_from(
                REL.join(parent, REL.c.parent_id == parent.c.id)
                .join(child, REL.c.child_id == child.c.id)
                .join(REL_TYPE, REL.c.type_id == REL_TYPE.c.id)
            )
            .order_by(parent.c.name, REL_TYPE.c.name, child.c.name)
        )
        if name is not None:
            stmt = stmt.where(or_(parent.c.name == name, child.c.name == name))
        with self._read() as conn:
            return [
                RelationshipRecord(parent=r.parent, child=r.child, type=r.type, label=r.forward_label)
                for r in conn.execute(stmt)
            ]

    def impacted_cis(self, name: str) -> list[CiRecord]:
        """Every CI that depends on or runs on `name`, directly or transitively (not `name`).

        Every relationship reads `parent <relies on> child`, so the impact of a change
        to a CI flows to its parents, their parents, and so on (cycles are safe).
        """
        with self._read() as conn:
            start = self._ci_id(conn, name)
            seed = select(REL.c.parent_id.label("ci_id")).where(REL.c.child_id == start)
            impacted = seed.cte("impacted", recursive=True)
            step = select(REL.c.parent_id).join(impacted, REL.c.child_id == impacted.c.ci_id)
            impacted = impacted.union(step)
            rows = conn.execute(
                select(CI).where(CI.c.id.in_(select(impacted.c.ci_id)), CI.c.id != start).order_by(CI.c.name)
            )
            return [self._ci_record(r) for r in rows]

    def ci_versions(self, name: str) -> list[CiVersionRecord]:
        """Versions of a CI as deployed, oldest first."""
        with self._read() as conn:
            ci_id = self._ci_id(conn, name)
            rows = conn.execute(
                select(VERSION).where(VERSION.c.ci_id == ci_id).order_by(VERSION.c.deployed_at, VERSION.c.id)
            )
            return [
                CiVersionRecord(
                    ci=name,
                    version=r.version,
                    artifact_digest=r.artifact_digest,
                    commit=r.commit,
                    deployed_at=r.deployed_at,
                    release_id=r.release_id,
                )
                for r in rows
            ]

    # --- deployment windows ------------------------------------------------------

    @staticmethod
    def _window(r: Row[Any]) -> WindowSpec:
        return WindowSpec(
            name=r.name,
            kind=r.kind,
            service=r.service,
            environment=r.environment,
            start=r.start_at,
            end=r.end_at,
            reason=r.reason,
            created_by=r.created_by,
        )

    def add_window(self, spec: WindowSpec, *, idempotency_key: str | None = None) -> bool:
        """Create or replace the window named `spec.name`; False if nothing changed."""
        values = dict(
            kind=spec.kind.value,
            service=spec.service,
            environment=spec.environment.value if spec.environment else None,
            start_at=_utc(spec.start),
            end_at=_utc(spec.end),
            reason=spec.reason,
            created_by=spec.created_by,
        )
        with self._write() as conn:
            current = conn.execute(select(WINDOW).where(WINDOW.c.name == spec.name)).first()
            if current is not None and self._window(current) == spec.model_copy(
                update={"start": _utc(spec.start), "end": _utc(spec.end)}
            ):
                return False
            key = idempotency_key or f"window.add/{spec.name}/{uuid.uuid4()}"
            if not self._claim(
                conn,
                key,
                actor=spec.created_by,
                action="window.add",
                subject=spec.name,
                detail=spec.model_dump(mode="json"),
            ):
                return False
            stmt = self._insert(WINDOW).values(name=spec.name, **values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))
            return True

    def remove_window(self, name: str, *, actor: str, idempotency_key: str | None = None) -> bool:
        """Delete the window `name`; False if there was none (or this key already removed it)."""
        with self._write() as conn:
            current = conn.execute(select(WINDOW).where(WINDOW.c.name == name)).first()
            if current is None:
                return False
            key = idempotency_key or f"window.remove/{name}/{current.id}"
            if not self._claim(
                conn,
                key,
                actor=actor,
                action="window.remove",
                subject=name,
                detail=self._window(current).model_dump(mode="json"),
            ):
                return False
            conn.execute(WINDOW.delete().where(WINDOW.c.id == current.id))
            return True

    def list_windows(self, at: datetime | None = None) -> list[WindowSpec]:
        """All windows by start, or only those active at `at`."""
        stmt = select(WINDOW).order_by(WINDOW.c.start_at, WINDOW.c.name)
        if at is not None:
            at = _utc(at)
            stmt = stmt.where(WINDOW.c.start_at <= at, WINDOW.c.end_at > at)
        with self._read() as conn:
            return [self._window(r) for r in conn.execute(stmt)]

    def window_decision(self, q: WindowQuery) -> WindowDecision:
        """Whether deployment is open for `q` (rule in the module docstring)."""
        at = _utc(q.at)
        stmt = select(WINDOW).where(
            WINDOW.c.end_at > at,
            or_(WINDOW.c.service.is_(None), WINDOW.c.service == q.service),
            or_(WINDOW.c.environment.is_(None), WINDOW.c.environment == q.environment.value),
        )
        with self._read() as conn:
            windows = [self._window(r) for r in conn.execute(stmt)]
        return decide(windows, at, q.change_type)

    # --- environment leases ---------------------------------------------------------

    def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        """Take the service's environment for `inp.release_id` unless another release holds it."""
        where = (LEASE.c.service == inp.service, LEASE.c.environment == inp.environment.value)
        with self._write() as conn:
            conn.execute(
                self._insert(LEASE)
                .values(
                    service=inp.service,
                    environment=inp.environment.value,
                    holder=inp.release_id,
                    acquired_at=self._clock(),
                )
                .on_conflict_do_nothing(index_elements=["service", "environment"])
            )
            holder = conn.execute(select(LEASE.c.holder).where(*where)).scalar_one()
        return LeaseDecision(granted=holder == inp.release_id, holder=holder)

    def release_lease(self, inp: LeaseInput) -> bool:
        """Give the environment back; only its holder can, and twice is harmless."""
        with self._write() as conn:
            result = conn.execute(
                LEASE.delete().where(
                    LEASE.c.service == inp.service,
                    LEASE.c.environment == inp.environment.value,
                    LEASE.c.holder == inp.release_id,
                )
            )
        return bool(result.rowcount)

    # --- release evidence ------------------------------------------------------------

    def _evidence_record(self, conn: Connection, release_id: str) -> EvidenceRecord | None:
        row = conn.execute(
            select(EVIDENCE.c.sha256, EVIDENCE.c.key_id).where(EVIDENCE.c.release_id == release_id)
        ).first()
        return None if row is None else EvidenceRecord(envelope_sha256=row.sha256, key_id=row.key_id)

    def put_evidence(
        self, key: str, release_id: str, envelope: dict[str, Any], record: EvidenceRecord
    ) -> EvidenceRecord:
        """Keep a release's signed evidence and return what is kept: the first envelope of a
        release stays, so a retry, a replay or a second close all get the same evidence."""
        with self._write() as conn:
            kept = self._evidence_record(conn, release_id)
            if kept is None and self._claim(
                conn,
                key,
                actor="relman",
                action="evidence.write",
                subject=release_id,
                release_id=release_id,
                detail={"sha256": record.envelope_sha256, "key_id": record.key_id},
            ):
                conn.execute(
                    self._insert(EVIDENCE)
                    .values(
                        release_id=release_id,
                        envelope=envelope,
                        sha256=record.envelope_sha256,
                        key_id=record.key_id,
                        at=self._clock(),
                    )
                    .on_conflict_do_nothing(index_elements=["release_id"])
                )
                kept = self._evidence_record(conn, release_id)
        if kept is None:
            raise CmdbInvalid(
                f"idempotency key {key} was used by another write, not by evidence of {release_id}"
            )
        return kept

    def get_evidence(self, release_id: str) -> StoredEvidence | None:
        """The signed evidence of a release, as written when it closed."""
        with self._read() as conn:
            row = conn.execute(select(EVIDENCE).where(EVIDENCE.c.release_id == release_id)).first()
        if row is None:
            return None
        return StoredEvidence(envelope=row.envelope, envelope_sha256=row.sha256, key_id=row.key_id, at=row.at)

    # --- DORA ------------------------------------------------------------------------

    def dora_rows(self, since: datetime, until: datetime, service: str | None = None) -> list[ChangeRecord]:
        """Changes deployed, or failed in production, or recovered within [since, until)."""
        since, until = _utc(since), _utc(until)

        def within(col: Any) -> Any:
            return and_(col >= since, col < until)

        stmt = self._change_select().where(or_(within(CHANGE.c.production_at), within(CHANGE.c.failed_at)))
        if service is not None:
            stmt = stmt.where(CHANGE.c.service == service)
        with self._read() as conn:
            return [ChangeRecord(**self._change_fields(r)) for r in conn.execute(stmt)]

    def dora(self, since: datetime, until: datetime, service: str | None = None) -> dora_.DoraMetrics:
        """The five DORA metrics and a daily series over [since, until)."""
        return dora_.compute(self.dora_rows(since, until, service), since, until, service)


def closing_kinds(change_type: ChangeType) -> frozenset[WindowKind]:
    """Window kinds that stop a change of this type."""
    if change_type == ChangeType.EMERGENCY:
        return frozenset({WindowKind.BLACKOUT})
    return frozenset({WindowKind.BLACKOUT, WindowKind.FREEZE})


def decide(windows: Sequence[WindowSpec], at: datetime, change_type: ChangeType) -> WindowDecision:
    """The window rule over windows that already apply to the service and environment."""
    at = _utc(at)
    kinds = closing_kinds(change_type)
    closing = [w for w in windows if w.kind in kinds]

    def active(t: datetime) -> list[WindowSpec]:
        return [w for w in closing if _utc(w.start) <= t < _utc(w.end)]

    now_closing = active(at)
    if not now_closing:
        maintenance = [
            w.name for w in windows if w.kind == WindowKind.MAINTENANCE and _utc(w.start) <= at < _utc(w.end)
        ]
        reason = f"open; inside maintenance window {', '.join(maintenance)}" if maintenance else "open"
        return WindowDecision(open=True, reason=reason)
    next_open = max(_utc(w.end) for w in now_closing)
    # Follow chains: each pass either moves next_open forward or stops; bounded by the count.
    for _ in range(len(closing)):
        later = active(next_open)
        if not later:
            break
        next_open = max(_utc(w.end) for w in later)
    first = sorted(now_closing, key=lambda w: (w.kind != WindowKind.BLACKOUT, w.name))[0]
    reason = f"{first.kind.value} {first.name!r} ({first.reason or 'no reason given'}); open again at "
    reason += next_open.isoformat()
    return WindowDecision(
        open=False, window=first.name, kind=first.kind, reason=reason[:1000], next_open=next_open
    )
