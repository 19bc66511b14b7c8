"""`relman.client.run(main)`: how a script that uses ReleaseClient ends (sdk-python#300)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
from relman.client import run
from relman.errors import RelmanError


async def main() -> None:
    print("working")
    {body}


run(main)
print("never printed: run leaves the process")
"""


def script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(SCRIPT.format(body=body)))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)


def test_a_script_that_succeeds_exits_0(tmp_path: Path) -> None:
    done = script(tmp_path, "return None")
    assert (done.returncode, done.stdout, done.stderr) == (0, "working\n", "")


def test_a_relman_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = script(tmp_path, 'raise RelmanError("no release named x")')
    assert (done.returncode, done.stdout, done.stderr) == (1, "working\n", "error: no release named x\n")


def test_any_other_error_keeps_its_traceback(tmp_path: Path) -> None:
    done = script(tmp_path, 'raise ValueError("boom")')
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.rstrip().endswith("ValueError: boom")
