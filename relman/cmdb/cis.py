"""Configuration items, their versions as deployed, and the relationships between them."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from relman.cmdb.audit_log import AuditLogStore
from relman.cmdb.errors import CmdbConflict, CmdbInvalid, CmdbNotFound
from relman.cmdb.models import CiVersion, ConfigurationItem, Relationship, RelationshipType, metadata
from relman.cmdb.records import CiRecord, CiSpec, CiVersionRecord, RelationshipRecord

CI = metadata.tables[ConfigurationItem.__tablename__]
REL = metadata.tables[Relationship.__tablename__]
REL_TYPE = metadata.tables[RelationshipType.__tablename__]
VERSION = metadata.tables[CiVersion.__tablename__]


class CiStore(AuditLogStore):
    """CIs by name, with optimistic locking, and `parent <type> child` relationships."""

    def get_ci(self, name: str) -> CiRecord | None:
        with self._read() as conn:
            r = conn.execute(select(CI).where(CI.c.name == name)).first()
        return None if r is None else CiRecord.model_validate(r, from_attributes=True)

    def list_cis(self) -> list[CiRecord]:
        with self._read() as conn:
            rows = conn.execute(select(CI).order_by(CI.c.name))
            return [CiRecord.model_validate(r, from_attributes=True) for r in rows]

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
                return CiRecord.model_validate(current, from_attributes=True)
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
            return CiRecord.model_validate(r, from_attributes=True)

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
                REL_TYPE.c.forward_label.label("label"),
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
            return [RelationshipRecord.model_validate(r, from_attributes=True) for r in conn.execute(stmt)]

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
            return [CiRecord.model_validate(r, from_attributes=True) for r in rows]

    def ci_versions(self, name: str) -> list[CiVersionRecord]:
        """Versions of a CI as deployed, oldest first."""
        with self._read() as conn:
            ci_id = self._ci_id(conn, name)
            rows = conn.execute(
                select(CI.c.name.label("ci"), VERSION)
                .join(CI, VERSION.c.ci_id == CI.c.id)
                .where(VERSION.c.ci_id == ci_id)
                .order_by(VERSION.c.deployed_at, VERSION.c.id)
            )
            return [CiVersionRecord.model_validate(r, from_attributes=True) for r in rows]
