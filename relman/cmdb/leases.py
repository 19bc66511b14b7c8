"""Environment leases: one release at a time rolls out a service's environment."""

from __future__ import annotations

from sqlalchemy import select

from relman.cmdb.engine import StoreEngine
from relman.cmdb.models import EnvironmentLease, metadata
from relman.contracts import LeaseDecision, LeaseInput

LEASE = metadata.tables[EnvironmentLease.__tablename__]


class LeaseStore(StoreEngine):
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
