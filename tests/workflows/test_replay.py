"""Replay recorded histories of real releases against today's workflow code.

A change that would break running releases (non-determinism) fails here. Record new
histories with `RELMAN_RECORD_HISTORIES=1 pytest tests/workflows`; guard intended changes
with `workflow.patched` (see README, "Changing the workflow safely").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from relman.worker import workflow_runner
from relman.workflows.component import ReleaseComponent
from relman.workflows.release import ReleaseWorkflow
from relman.workflows.train import ReleaseTrain

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_kept() -> None:
    assert len(HISTORIES) >= 6, "tests/histories/ must hold recorded releases to replay"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    data = json.loads(path.read_text())
    # The release id signed messages are bound to; a replay under another id refuses them.
    history = WorkflowHistory.from_json(data.pop("workflowId", path.stem), data)
    replayer = Replayer(
        workflows=[ReleaseWorkflow, ReleaseTrain, ReleaseComponent],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(strict=True),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
