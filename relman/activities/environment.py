"""Environment activities: a directory of release folders and a `current` symlink.

`<base>/<version>/` holds a copy of the package; `<base>/current` points at one of them and
is switched atomically (a temporary link renamed over it). `<base>/.relman/deploys.json`
records, per idempotency key, what each deploy replaced, so a retry returns the same result
and a rollback restores exactly the version that was there before.

Concurrency rule: every switch of an environment holds an exclusive `fcntl` lock on
`<base>/.relman/lock`. Copying a package happens before taking the lock, so the lock is
held for milliseconds and a second deploy or rollback simply waits its turn (serialized).
If the lock is still held after `lock_wait` seconds the holder is stuck, and the caller is
refused with a non-retryable `EnvironmentLocked` naming the holder's key. The kernel drops
the lock when its process dies, so a crashed worker never leaves a stale lock.

Leftovers: a package is copied into `<base>/.incoming-<version>-<8 hex>` and renamed into
place, so a worker killed mid-copy leaves that directory behind. Each copy holds an `fcntl`
lock on `<base>/.relman/incoming/<name>.lock` while it runs; the next stage into the
environment removes every `.incoming-*` directory whose lock it can take (its copier is
dead) and leaves the others (a copy in progress). Only names of that exact form, and only
real directories, are ever removed; version directories and `current` are never touched.

Downgrades: a deploy of a version lower than the one `current` serves (semantic-version
precedence) is refused unless the request allows it (`allow_downgrade`).

Targets: what makes a version serve is a `Target`. For a directory it is the `current`
switch itself; for `type: command` (relman/activities/command_deploy.py) it is the catalog's
deploy and rollback commands, checked by its `current` command, with `current` kept as a
mirror of the verified version. Staging, records, the lock and every rule above are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.activities.build import PackageInvalid, verify_package
from relman.activities.services import service_spec
from relman.catalog import Catalog
from relman.contracts import (
    Activity,
    DeployInput,
    DeployResult,
    Environment,
    ErrorType,
    ReleasePackage,
    RollbackInput,
)

log = structlog.get_logger(__name__)

CURRENT = "current"
STATE_DIR = ".relman"
DIGEST_FILE = ".relman-digest"
INCOMING_LOCKS = "incoming"
"""Under the state dir: one lock file per copy in progress."""

_INCOMING = re.compile(r"\.incoming-[0-9A-Za-z.+-]{1,80}-[0-9a-f]{8}")
_SWITCH_TMP = re.compile(r"\.current-[0-9a-f]{8}")
_STATE_TMP = re.compile(r"\.deploys-[0-9a-f]{8}\.json")
_SEMVER = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)(?:([-+])([0-9A-Za-z.-]+))?")

VersionKey = tuple[tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> VersionKey | None:
    """A sort key with semantic-version precedence (semver.org §11), or None if not one.

    Numbers compare as numbers (2.10.0 > 2.9.0); a pre-release sorts before its release
    (2.5.0-rc.1 < 2.5.0); pre-release identifiers compare one by one, numeric ones as numbers
    and below alphanumeric ones, a longer list above its own prefix; build metadata
    (`+build.7`) does not count.
    """
    m = _SEMVER.fullmatch(version)
    if m is None:
        return None
    major, minor, patch, sep, suffix = m.groups()
    core = (int(major), int(minor), int(patch))
    if sep != "-":
        return core, 1, ()
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in suffix.split("."))
    return core, 0, ids


def is_downgrade(current: str | None, new: str) -> bool:
    """Whether going from `current` to `new` goes back (False if either is not a semver)."""
    if current is None:
        return False
    old_key, new_key = version_key(current), version_key(new)
    return old_key is not None and new_key is not None and new_key < old_key


def _heartbeat(details: dict[str, Any]) -> None:
    # The adapter is usable outside an activity too (scripts, tests of the directory logic).
    if activity.in_activity():
        activity.heartbeat(details)


class EnvironmentDir:
    """One environment's directory; all methods are synchronous and take the lock."""

    def __init__(self, base: Path, name: str = "env", lock_wait: float = 30.0) -> None:
        self.base = base
        self.name = name
        self.lock_wait = lock_wait
        self.state_dir = base / STATE_DIR
        self.state_file = self.state_dir / "deploys.json"

    def ensure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def current(self) -> str | None:
        """The version `current` points at, or None."""
        link = self.base / CURRENT
        return os.readlink(link) if link.is_symlink() else None

    def version_dir(self, version: str) -> Path:
        return self.base / version

    @contextlib.asynccontextmanager
    async def locked(self, holder: str) -> AsyncIterator[None]:
        self.ensure()
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        other = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
                        raise ApplicationError(
                            f"{self.name} environment at {self.base} is locked by {other} "
                            f"for more than {self.lock_wait:g}s",
                            type=ErrorType.ENVIRONMENT_LOCKED,
                            non_retryable=True,
                        ) from None
                    _heartbeat({"waiting_for_lock": self.name})
                    await asyncio.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def load_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, state: dict[str, dict[str, Any]]) -> None:
        tmp = self.state_dir / f".deploys-{uuid.uuid4().hex[:8]}.json"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    def switch(self, version: str | None) -> None:
        """Point `current` at `version` atomically, or remove it when None."""
        link = self.base / CURRENT
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            return
        tmp = self.base / f".current-{uuid.uuid4().hex[:8]}"
        os.symlink(version, tmp)  # relative: the environment can be moved as a whole
        os.replace(tmp, link)

    @contextlib.contextmanager
    def _claim(self, name: str, *, wait: bool) -> Iterator[bool]:
        """Hold the lock of the copy `name` (yields False if a live process holds it).

        The lock file is removed by whoever holds it when done, so after taking the lock the
        file must still be the one at the path; if not, it was replaced, and we try again.
        """
        lock_dir = self.state_dir / INCOMING_LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / f"{name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)

    def remove_leftovers(self) -> list[str]:
        """Remove `.incoming-*` copies whose copier died (no one holds their lock); their names."""
        names = {p.name for p in self.base.iterdir() if _INCOMING.fullmatch(p.name)}
        lock_dir = self.state_dir / INCOMING_LOCKS
        if lock_dir.is_dir():
            stems = (p.name.removesuffix(".lock") for p in lock_dir.iterdir() if p.name.endswith(".lock"))
            names.update(n for n in stems if _INCOMING.fullmatch(n))
        removed = []
        for name in sorted(names):
            with self._claim(name, wait=False) as held:
                path = self.base / name
                # A live copy keeps its directory; a symlink or file of that name is not ours.
                if held and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    removed.append(name)
        if removed:
            log.info("environment.leftovers_removed", env=self.name, removed=removed)
        return removed

    def remove_switch_leftovers(self) -> None:
        """Temporary links and state files of a switch that was killed; call holding the lock."""
        for p in self.base.iterdir():
            if _SWITCH_TMP.fullmatch(p.name) and p.is_symlink():
                p.unlink()
        for p in self.state_dir.iterdir():
            if _STATE_TMP.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()

    def _incoming_name(self, version: str) -> str:
        return f".incoming-{version}-{uuid.uuid4().hex[:8]}"

    def stage(self, package: ReleasePackage) -> None:
        """Copy the package to `<base>/<version>` unless that exact package is there already."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.ensure()
        self.remove_leftovers()
        target = self.version_dir(package.version)
        marker = target / DIGEST_FILE
        if marker.is_file() and marker.read_text().strip() == package.digest:
            return
        if target.exists() and self.current() == package.version:
            raise ApplicationError(
                f"{self.name} already serves {package.version} with different content; refusing to overwrite",
                type=ErrorType.DEPLOY_FAILED,
                non_retryable=True,
            )
        name = self._incoming_name(package.version)
        with self._claim(name, wait=True):
            tmp = self.base / name
            shutil.copytree(package.path, tmp, symlinks=False)
            (tmp / DIGEST_FILE).write_text(package.digest + "\n")
            if target.exists():
                # Out of the way in one rename, then removed: a kill can leave a leftover
                # (removed next time), never a half-deleted version directory with its marker.
                old = self._incoming_name(package.version)
                with self._claim(old, wait=True):
                    os.rename(target, self.base / old)
                    os.rename(tmp, target)
                    shutil.rmtree(self.base / old)
            else:
                os.rename(tmp, target)


class Target(Protocol):
    """How an environment makes a version live and says which one is: the adapters' seam.

    The deploy and rollback rules (records, idempotency, downgrades, third versions) are the
    same for every kind of environment and live in `EnvironmentActivities`; a target only
    switches. Its methods are called holding the environment's lock.
    """

    mirror_is_truth: bool
    """Whether `<base>/current` is what serves (a directory) or a mirror of it (commands)."""

    async def running(self) -> str | None:
        """The version that serves now, or None."""
        ...

    async def make_live(self, version: str, previous: str | None, package_dir: Path) -> None:
        """Make `version` (staged in `<base>/<version>`) serve, verified; then mirror it."""
        ...

    async def restore(self, version: str | None, removed: str) -> None:
        """Put `version` back in place of `removed` (None: nothing serves), verified, mirrored."""
        ...


class DirectoryTarget:
    """The built-in target: switching the `current` symlink is the deploy."""

    mirror_is_truth = True

    def __init__(self, env: EnvironmentDir) -> None:
        self.env = env

    async def running(self) -> str | None:
        return self.env.current()

    async def make_live(self, version: str, previous: str | None, package_dir: Path) -> None:
        self.env.switch(version)

    async def restore(self, version: str | None, removed: str) -> None:
        if version is not None and not self.env.version_dir(version).is_dir():
            raise ApplicationError(
                f"{self.env.name}: version {version} to restore is not on disk",
                type=ErrorType.DEPLOY_FAILED,
                non_retryable=True,
            )
        self.env.switch(version)


class EnvironmentActivities:
    """Deploy and roll back catalog environments: directories, or commands (`type: command`)."""

    def __init__(self, catalog: Catalog, lock_wait: float = 30.0) -> None:
        self.catalog = catalog
        self.lock_wait = lock_wait

    def env(self, service: str, environment: Environment) -> EnvironmentDir:
        return self.target(service, environment)[0]

    def target(self, service: str, environment: Environment) -> tuple[EnvironmentDir, Target]:
        """The environment's directory and the target that switches what serves."""
        spec = service_spec(self.catalog, service)
        env_spec = spec.environments[environment]
        name = f"{service}/{environment.value}"
        if env_spec.type == "directory":
            env = EnvironmentDir(env_spec.base_dir, name, self.lock_wait)
            return env, DirectoryTarget(env)
        from relman.activities.command_deploy import CommandTarget, holder_limit

        # The holder runs commands under the lock: it is stuck only past their own limits.
        env = EnvironmentDir(env_spec.base_dir, name, self.lock_wait + holder_limit(env_spec))
        return env, CommandTarget(spec, service, environment, env)

    @activity.defn(name=Activity.DEPLOY)
    async def deploy(self, inp: DeployInput) -> DeployResult:
        """Put `inp.version` live in the environment; a no-op when it already is."""
        env, target = self.target(inp.service, inp.environment)
        env.ensure()
        recorded = env.load_state().get(inp.idempotency_key)
        if recorded and target.mirror_is_truth and env.current() == recorded["version"]:
            return DeployResult.model_validate(recorded["result"])
        try:
            await asyncio.to_thread(verify_package, Path(inp.package.path))
        except PackageInvalid as exc:
            raise ApplicationError(
                f"package {inp.package.path} is not deployable: {exc}",
                type=ErrorType.PACKAGE_INVALID,
                non_retryable=True,
            ) from None
        if inp.package.version != inp.version:
            raise ApplicationError(
                f"package is {inp.package.version}, deploy asked for {inp.version}",
                type=ErrorType.DEPLOY_FAILED,
                non_retryable=True,
            )
        # Checked before the copy (fail fast) and again under the lock (what counts).
        self._refuse_downgrade(inp, env.current())
        # Copy outside the lock: the lock only guards the switch and the state file.
        await asyncio.to_thread(env.stage, inp.package)
        async with env.locked(inp.idempotency_key):
            env.remove_switch_leftovers()
            running = await target.running()
            state = env.load_state()
            recorded = state.get(inp.idempotency_key)
            ours = recorded is not None and recorded.get("version") == inp.version
            if ours and running == inp.version == env.current():
                # An earlier attempt finished (the mirror moves only once verified).
                assert recorded is not None
                return DeployResult.model_validate(recorded["result"])
            self._refuse_downgrade(inp, running)
            previous = running
            if ours and running == inp.version:
                # An attempt killed after its switch, before verifying it: what it replaced is
                # on record, and the switch is redone (a deploy command must be idempotent).
                assert recorded is not None
                previous = recorded["previous_version"]
            changed = previous != inp.version
            result = DeployResult(
                environment=inp.environment, version=inp.version, previous_version=previous, changed=changed
            )
            state[inp.idempotency_key] = {
                "release_id": inp.release_id,
                "version": inp.version,
                "previous_version": previous,
                "at": time.time(),
                "result": result.model_dump(mode="json"),
            }
            # Record before switching: a crash in between leaves a record whose retry redoes
            # the switch, never a switch without the record of what it replaced.
            env.save_state(state)
            if changed:
                await target.make_live(inp.version, previous, Path(inp.package.path))
            elif env.current() != inp.version:
                env.switch(inp.version)
        log.info(
            "deploy.done",
            key=inp.idempotency_key,
            env=env.name,
            version=inp.version,
            previous=previous,
            changed=changed,
        )
        return result

    @staticmethod
    def _refuse_downgrade(inp: DeployInput, current: str | None) -> None:
        if inp.allow_downgrade or not is_downgrade(current, inp.version):
            return
        raise ApplicationError(
            f"refusing to downgrade {inp.service} in {inp.environment.value} from {current} to "
            f"{inp.version}; set allow_downgrade: true in the manifest to do it on purpose",
            type=ErrorType.INVALID_REQUEST,
            non_retryable=True,
        )

    @activity.defn(name=Activity.ROLLBACK)
    async def rollback(self, inp: RollbackInput) -> DeployResult:
        """Undo this release's deploy: put back what it replaced (from the state file).

        The state file wins over `inp.restore_version`: if the workflow never saw the deploy's
        result (a timeout after the switch), the record still says what was there before.
        With `inp.deploy_step` the record of exactly that deploy is used (none: nothing to
        undo); without it, the first deploy of this release and version that changed anything.
        If `current` has moved on to a third version, nothing is touched and the rollback is
        refused (non-retryable) rather than clobbering another release.
        """
        env, target = self.target(inp.service, inp.environment)
        async with env.locked(inp.idempotency_key):
            state = env.load_state()
            if inp.deploy_step is not None:
                # The workflow names the deploy it undoes: exactly that record, or nothing.
                record = state.get(f"{inp.release_id}/{inp.deploy_step}")
                records = [record] if record and record.get("version") == inp.version else []
            else:
                records = [
                    r
                    for r in state.values()
                    if r.get("release_id") == inp.release_id and r.get("version") == inp.version
                ]
            records.sort(key=lambda r: r.get("at", 0))
            current = await target.running()
            if records:
                changing = [r for r in records if r["previous_version"] != inp.version]
                restore = changing[0]["previous_version"] if changing else inp.version
            elif inp.deploy_step is not None:
                restore = current  # that deploy never ran: nothing to undo
            else:
                # Nothing recorded: only roll back if our version is what serves.
                restore = inp.restore_version if current == inp.version else current
            if current == restore:
                if env.current() != current:
                    env.switch(current)  # a command environment's mirror catches up
                return DeployResult(
                    environment=inp.environment,
                    version=current or inp.version,
                    previous_version=current,
                    changed=False,
                )
            if current not in (inp.version, None):
                raise ApplicationError(
                    f"{env.name} now serves {current}, not {inp.version}; refusing to roll back over it",
                    type=ErrorType.DEPLOY_FAILED,
                    non_retryable=True,
                )
            await target.restore(restore, inp.version)
        log.info(
            "rollback.done", key=inp.idempotency_key, env=env.name, removed=inp.version, restored=restore
        )
        # `version` is what now serves; with nothing to restore it stays the removed version's
        # name only because the contract requires one (`previous_version` says what was live).
        return DeployResult(
            environment=inp.environment,
            version=restore or inp.version,
            previous_version=current,
            changed=True,
        )
