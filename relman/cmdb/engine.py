"""The CMDB's engine: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL, and the
short transactions every store method runs in.

SQLite runs in WAL mode with a busy timeout; write transactions start with
`BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of failing
on a lock upgrade. On first use the store checks the schema revision
(relman/cmdb/migrate.py): an empty database is migrated to head, an older one refused.
The database URL's password never appears in errors.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, exc, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from relman.cmdb import migrate
from relman.cmdb.errors import CmdbError, CmdbInvalid, CmdbUnavailable
from relman.cmdb.models import RelationshipType, metadata

REL_TYPE = metadata.tables[RelationshipType.__tablename__]

DEFAULT_RELATIONSHIP_TYPES = [
    ("depends_on", "depends on", "is depended on by"),
    ("runs_on", "runs on", "hosts"),
]
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCHEMA_LOCK = 0x524D_434D_4442
"""PostgreSQL advisory lock ("RMCMDB") serializing schema creation and migration."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _sha256_hex(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class StoreEngine:
    """One engine and its transactions; the table-group mixins of `CmdbStore` build on it."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        clock: Callable[[], datetime] = now_utc,
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
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL without its password, safe to log."""
        return self._url.render_as_string(hide_password=True)

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

    @contextmanager
    def _schema_transaction(self) -> Iterator[Connection]:
        """The transaction that checks or migrates the schema, one process at a time."""
        # SQLite: BEGIN IMMEDIATE, so two processes creating the schema queue up.
        with (
            self._errors(),
            self.engine.connect().execution_options(relman_write=True) as conn,
            conn.begin(),
        ):
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
                if self._schema:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'))
            yield conn
            self._seed(conn)

    def _seed(self, conn: Connection) -> None:
        conn.execute(
            self._insert(REL_TYPE)
            .values(
                [dict(name=n, forward_label=f, reverse_label=r) for n, f, r in DEFAULT_RELATIONSHIP_TYPES]
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )

    def _ensure_schema(self) -> None:
        """An empty database is created at head; an older one is refused (`upgrade` it)."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with self._schema_transaction() as conn:
                migrate.ensure_current(conn, self.url)
            self._ready = True

    def upgrade(self) -> tuple[str | None, str]:
        """Apply pending migrations: (revision before, revision after); twice is a no-op."""
        with self._ready_lock, self._schema_transaction() as conn:
            before, after = migrate.upgrade(conn)
        self._ready = True
        return before, after

    def schema_revision(self) -> str | None:
        """The database's schema revision (None: empty, or created before migrations)."""
        with self._errors(), self.engine.connect() as conn:
            return migrate.current_revision(conn)

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
                conn.execute(text(f"DROP TABLE IF EXISTS {migrate.VERSION_TABLE}"))
        self._ready = False
