"""flagd flag definitions for exposure: build, validate (flagd's format and parser), write atomically.

One file per environment (`<env base>/flags.flagd.json`) holds one flag per service. A flag
has two string variants, `new` (the release's version) and `previous` (what production served
before the release), and says who gets `new`:

- allow-listed targeting keys always (an `in` rule on `targetingKey`);
- everyone else through flagd's `fractional` operator, with weights out of `WEIGHT_TOTAL`
  (0.01% resolution) and `new` first. flagd hashes `[flagKey, targetingKey]` and picks the
  bucket from the hash times the total weight, so with the total fixed a key's position never
  moves: growing `new`'s weight only adds keys (1% stays inside 5% and 25%). Keys without a
  targeting key get `defaultVariant`;
- 0% with an empty allow-list is the kill switch: no targeting, everyone `previous`;
- 100% makes `new` the default variant with no targeting: every request, keyed or not.

Metadata names the release, version, previous version, artifact digest, stage and percent, so
a reader can tell which write it sees. Nothing here talks to Temporal or to OpenFeature.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

FLAGS_FILE = "flags.flagd.json"
FLAGS_LOG = "flags.log"
SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
WEIGHT_TOTAL = 10_000
"""Fractional weights are integers out of this: 0.01% resolution, and the bucket of a key
depends on the total, so it must never change between the stages of a release."""
NEW = "new"
PREVIOUS = "previous"


class FlagdError(ValueError):
    """A flag document that flagd's schema refuses, or a flags file that is not a document."""


@dataclass(frozen=True)
class ExposureFlag:
    """What one exposure write says about one service's flag."""

    key: str
    release: str
    version: str
    previous: str
    percent: float
    allow_list: tuple[str, ...] = ()
    digest: str = ""
    stage: str = ""
    metadata: dict[str, str | float] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_list", tuple(sorted(set(self.allow_list))))
        object.__setattr__(
            self,
            "metadata",
            {
                "managedBy": "relman",
                "release": self.release,
                "version": self.version,
                "previous": self.previous,
                "digest": self.digest,
                "stage": self.stage,
                "percent": self.percent,
            },
        )

    @property
    def weight(self) -> int:
        """`new`'s fractional weight out of WEIGHT_TOTAL."""
        return max(0, min(WEIGHT_TOTAL, round(self.percent * WEIGHT_TOTAL / 100)))

    @property
    def killed(self) -> bool:
        return self.weight == 0 and not self.allow_list


def targeting(flag: ExposureFlag) -> dict[str, Any] | None:
    """The flag's JSONLogic rule, or None where the default variant says it all."""
    if flag.weight >= WEIGHT_TOTAL or flag.killed:
        return None
    rest: dict[str, Any] | None = None
    if flag.weight > 0:
        rest = {"fractional": [[NEW, flag.weight], [PREVIOUS, WEIGHT_TOTAL - flag.weight]]}
    if not flag.allow_list:
        return rest
    # null in the else branch falls back to defaultVariant (previous).
    return {"if": [{"in": [{"var": "targetingKey"}, list(flag.allow_list)]}, NEW, rest]}


def definition(flag: ExposureFlag) -> dict[str, Any]:
    """The flagd definition of one flag."""
    body: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {NEW: flag.version, PREVIOUS: flag.previous},
        "defaultVariant": NEW if flag.weight >= WEIGHT_TOTAL else PREVIOUS,
        "metadata": dict(flag.metadata),
    }
    rule = targeting(flag)
    if rule is not None:
        body["targeting"] = rule
    return body


def empty_document() -> dict[str, Any]:
    return {"$schema": SCHEMA_URL, "flags": {}}


def with_flag(document: dict[str, Any], flag: ExposureFlag) -> dict[str, Any]:
    """A copy of `document` with `flag`'s definition in place of its old one."""
    flags = dict(document.get("flags") or {})
    flags[flag.key] = definition(flag)
    return {**document, "flags": dict(sorted(flags.items()))}


def kept_previous(document: dict[str, Any], key: str, release: str) -> str | None:
    """The `previous` variant this release wrote before, if the flag is still its own.

    Captured at the release's first exposure and kept: after go-live production's `current`
    is the new version itself, so it cannot be asked again.
    """
    old = (document.get("flags") or {}).get(key)
    if not isinstance(old, dict) or (old.get("metadata") or {}).get("release") != release:
        return None
    previous = (old.get("variants") or {}).get(PREVIOUS)
    return previous if isinstance(previous, str) and previous else None


_PRIMITIVE = {"type": ["string", "number", "boolean"]}
FLAG_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["flags"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": _PRIMITIVE},
        "flags": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
            "additionalProperties": {"$ref": "#/definitions/flag"},
        },
    },
    "definitions": {
        "flag": {
            "type": "object",
            "required": ["state", "variants", "defaultVariant"],
            "additionalProperties": False,
            "properties": {
                "state": {"enum": ["ENABLED", "DISABLED"]},
                "variants": {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "additionalProperties": {"type": "string"},
                },
                "defaultVariant": {"type": "string"},
                "targeting": {"$ref": "#/definitions/rule"},
                "metadata": {"type": "object", "additionalProperties": _PRIMITIVE},
            },
        },
        # JsonLogic: a rule is one operator with its arguments.
        "rule": {"type": "object", "minProperties": 1, "maxProperties": 1},
        # An optional bucket-by expression, then [variant, integer weight] buckets.
        "fractional": {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "object"},
                    {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 2,
                        "items": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                    },
                ]
            },
        },
    },
}
"""The flag-definition format (https://flagd.dev/reference/flag-definitions/) as relman writes
it: string variants, a default among them, JsonLogic targeting, primitive metadata. Written for
relman: flagd's published schema is not distributed on a package registry. flagd-core's own
parser (what the in-process provider loads files with) checks every document as well."""


@cache
def _validator() -> Any:
    # Imported here: jsonschema loads in ~100 ms, and only writers need it.
    from jsonschema import Draft7Validator

    return Draft7Validator(FLAG_SCHEMA)


def _fractional_rules(node: Any) -> list[tuple[str, Any]]:
    """Every `fractional` operator's arguments in a targeting rule, with its path."""
    found: list[tuple[str, Any]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "fractional":
                    found.append((f"{path}/fractional", inner))
                walk(inner, f"{path}/{key}")
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(inner, f"{path}/{i}")

    walk(node, "")
    return found


def _problem(document: dict[str, Any]) -> str | None:
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the document"
        return f"{where}: {' '.join(error.message.split())}"
    fractional = Draft7Validator({"$ref": "#/definitions/fractional", **FLAG_SCHEMA})
    for key, flag in document["flags"].items():
        variants = flag["variants"]
        if flag["defaultVariant"] not in variants:
            return f"flags/{key}/defaultVariant: {flag['defaultVariant']!r} is not one of its variants"
        for path, args in _fractional_rules(flag.get("targeting")):
            error = best_match(fractional.iter_errors(args))
            while error is not None and error.context:
                # anyOf: name the deepest reason, not "not valid under any of the given schemas".
                error = best_match(error.context)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path)
                return f"flags/{key}/targeting{path}/{where}: {' '.join(error.message.split())}"
            unknown = [b[0] for b in args if isinstance(b, list) and b[0] not in variants]
            if unknown:
                return f"flags/{key}/targeting{path}: unknown variant(s) {unknown}"
    return None


def validate(document: dict[str, Any]) -> None:
    """Refuse a document that is not a flag definition flagd loads, in one line naming where."""
    from openfeature.contrib.tools.flagd.core.model.flag_store import FlagStore
    from openfeature.exception import ParseError

    problem = _problem(document)
    if problem is None:
        try:
            FlagStore().update(json.loads(json.dumps(document)))
        except ParseError as exc:
            problem = f"flagd refuses the document: {exc}"
    if problem is not None:
        raise FlagdError(f"flag definition refused: {problem[:300]}")


def read_document(path: Path) -> dict[str, Any]:
    """The flags document at `path`; an empty one if there is no file yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return empty_document()
    except (OSError, ValueError) as exc:
        raise FlagdError(f"{path}: not a flagd JSON document ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags", {}), dict):
        raise FlagdError(f"{path}: not a flagd document (no `flags` object)")
    return data


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Validate, then replace atomically: readers see the old file or the new, never half."""
    validate(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        old_mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        old_mtime = 0
    try:
        with tmp.open("w") as f:
            json.dump(document, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # flagd's file provider reloads only when the mtime grows: on a file system with
        # coarse timestamps (or a clock set back) two writes could share one, and services
        # would keep the first. One second later is later on any of them.
        st = tmp.stat()
        if st.st_mtime_ns <= old_mtime:
            os.utime(tmp, ns=(st.st_atime_ns, old_mtime + 1_000_000_000))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # The rename is durable only once the directory entry is.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
