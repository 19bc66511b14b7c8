"""Alembic migrations of the CMDB schema (relman/cmdb/migrate.py runs them)."""
