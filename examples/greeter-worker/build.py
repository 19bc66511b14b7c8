"""Build a greeter-worker release package: the worker, its probe, its tests; stamp the version.

python build.py --version 2.0.0 --commit abc1234 --out PACKAGE_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("worker.py", "probe.py", "conftest.py", "pytest.ini")


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
    (out / "VERSION").write_text(args.version + "\n")
    behaviour = HERE / "behaviour" / f"{args.version}.json"
    (out / "behaviour.json").write_text(behaviour.read_text() if behaviour.is_file() else "{}\n")
    (out / "RELEASE_NOTES.md").write_text(f"greeter-worker {args.version} (commit {args.commit})\n")
    print(f"built greeter-worker {args.version} into {out}")


if __name__ == "__main__":
    main()
