"""Build a greeter-db release package: its migrations (those shipped by this version), the
migration tool, the probe and the tests.

python build.py --version 2.0.0 --commit abc1234 --out PACKAGE_DIR

A migration ships from the version its `-- since:` line names, so one source tree builds
every release: 1.0.0 holds only 001, 2.0.0 holds 001-003. `behaviour/<version>.json` makes a
release misbehave on purpose: `{"bug": "migration"}` ships one more migration that forgets to
create the table it fills (its tests and any deploy of it fail).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from migrate import parse, version_key

HERE = Path(__file__).resolve().parent
FILES = ("migrate.py", "probe.py", "conftest.py", "pytest.ini")
BROKEN = """-- since: 0.0.0
-- Counts greetings per language (the `migration` bug: it never creates its table).
-- up
INSERT INTO greeting_stats (lang, sent) SELECT lang, 0 FROM greetings;
-- down
DELETE FROM greeting_stats;
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(HERE / name, out / name)
    shutil.copytree(HERE / "tests", out / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    behaviour_file = HERE / "behaviour" / f"{args.version}.json"
    behaviour = json.loads(behaviour_file.read_text()) if behaviour_file.is_file() else {}
    shipped = sorted(
        (p for p in (HERE / "migrations").glob("*.sql") if parse(p).since <= version_key(args.version)),
        key=lambda p: p.name,
    )
    if not shipped:
        raise SystemExit(f"greeter-db {args.version} ships no migration (the first is since 1.0.0)")
    (out / "migrations").mkdir(exist_ok=True)
    for path in shipped:
        shutil.copy2(path, out / "migrations" / path.name)
    if behaviour.get("bug") == "migration":
        (out / "migrations" / f"{parse(shipped[-1]).number + 1:03d}_greeting_stats.sql").write_text(BROKEN)
    (out / "VERSION").write_text(args.version + "\n")
    (out / "behaviour.json").write_text(json.dumps(behaviour) + "\n")
    (out / "RELEASE_NOTES.md").write_text(
        f"greeter-db {args.version} (commit {args.commit}): migrations {', '.join(p.stem for p in shipped)}\n"
    )
    print(f"built greeter-db {args.version} into {out} ({len(shipped)} migrations)")


if __name__ == "__main__":
    main()
