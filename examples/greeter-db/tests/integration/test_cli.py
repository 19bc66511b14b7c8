"""The commands relman runs in greeter-db's environments: deploy, current, undeploy."""

import subprocess
import sys
from pathlib import Path

RELEASE = Path(__file__).resolve().parents[2]


def migrate(*args):
    return subprocess.run(
        [sys.executable, str(RELEASE / "migrate.py"), *args], capture_output=True, text=True, timeout=30
    )


def test_deploy_then_current_prints_this_version(tmp_path):
    db = str(tmp_path / "env" / "greeter.sqlite")
    assert migrate("current", "--db", db).stdout == ""
    first = migrate("deploy", "--db", db, "--release-dir", str(RELEASE))
    assert first.returncode == 0, first.stderr
    assert "applied 001_greetings" in first.stdout
    version = (RELEASE / "VERSION").read_text().strip()
    assert migrate("current", "--db", db).stdout.strip() == version
    again = migrate("deploy", "--db", db, "--release-dir", str(RELEASE))
    assert again.returncode == 0 and again.stdout.strip() == "schema unchanged"


def test_undeploy_leaves_nothing_current(tmp_path):
    db = tmp_path / "greeter.sqlite"
    assert migrate("deploy", "--db", str(db), "--release-dir", str(RELEASE)).returncode == 0
    assert migrate("undeploy", "--db", str(db)).returncode == 0
    assert migrate("current", "--db", str(db)).stdout == "" and not db.exists()
