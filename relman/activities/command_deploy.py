"""Deploys through commands: an environment of `type: command` (helm, kubectl, supervisor...).

The catalog gives three argv lists: `deploy` makes `{version}` run, `rollback` puts back a
named `{version}`, `current` prints the version that runs. relman trusts none of them on
their word: after each deploy and rollback it runs `current` and requires exactly the
version it asked for, else the step fails naming both. The verified version is mirrored as
the `<base>/current` symlink, which exposure and health read as they do for a directory.

Everything else is the directory adapter's (relman/activities/environment.py): the package
is staged into `<base>/<version>` (commands may read it as `{release_dir}`), deploy records
keyed by idempotency key, downgrade and third-version refusals, and the environment lock,
held here for as long as a command runs. A retry after a crash runs the deploy command
again: a deploy command must succeed, changing nothing, when its version already runs.

Commands run without a shell in the service's workdir, with the service's `env` and
`secrets` (masked in all output kept), in their own process group; a command left running
by a killed worker is killed by the next command of the same environment before it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.activities.runner import RunResult, command_env, run_command, stop_orphan
from relman.catalog import EnvironmentSpec, ServiceSpec, render_argv
from relman.contracts import Environment, ErrorType, Version

if TYPE_CHECKING:
    from relman.activities.environment import EnvironmentDir

log = structlog.get_logger(__name__)

RUNS_DIR = "runs"
"""Under the environment's state dir: the output of the last command of each kind."""
SWITCH_LOG = "switch.log"
"""deploy, rollback and undeploy share one log, hence one marker of a running command, so
whichever runs next kills an orphan of any of them."""
CURRENT_LOG = "current.log"

CommandKind = Literal["deploy", "rollback", "current", "undeploy"]
_VERSION: TypeAdapter[str] = TypeAdapter(Version)


class CommandFailed(Exception):
    """A command of a command environment failed or printed something unusable."""


def holder_limit(spec: EnvironmentSpec) -> float:
    """How long a deploy holds the lock at most: `current`, `deploy`, `current` again."""
    return 3 * spec.timeout


def parse_current(stdout: str) -> str | None:
    """The version a `current` command printed: one line, or nothing when none runs."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) > 1:
        raise CommandFailed(f"printed {len(lines)} lines; it must print the running version alone")
    try:
        return _VERSION.validate_python(lines[0])
    except ValidationError:
        raise CommandFailed(f"printed {lines[0][:80]!r}, which is not a version") from None


def failure_line(result: RunResult, timeout: float) -> str:
    """Why a command failed, in one line: exit status and its last line of output (masked)."""
    why = f"timed out after {timeout:g}s" if result.timed_out else f"exit {result.returncode}"
    last = next((line.strip() for line in reversed(result.tail.splitlines()) if line.strip()), "")
    return f"{why}: {last[:300]}" if last else f"{why}, no output"


def _heartbeat(details: dict[str, Any]) -> None:
    if activity.in_activity():
        activity.heartbeat(details)


class CommandTarget:
    """A `type: command` environment as a `Target` of the environment activities."""

    mirror_is_truth = False

    def __init__(
        self, spec: ServiceSpec, service: str, environment: Environment, env: EnvironmentDir
    ) -> None:
        self.spec = spec
        self.env_spec = spec.environments[environment]
        self.service = service
        self.environment = environment
        self.env = env
        self.runs = env.state_dir / RUNS_DIR

    def _values(self, version: str | None = None, previous: str | None = None) -> dict[str, str]:
        values = {
            "service": self.service,
            "environment": self.environment.value,
            "env_dir": str(self.env.base),
        }
        if version is not None:
            release_dir = str(self.env.version_dir(version))
            values |= {"version": version, "release_dir": release_dir, "package_dir": release_dir}
        # No previous version is an empty argument, never a missing one.
        values["previous_version"] = previous or ""
        return values

    async def _run(self, kind: CommandKind, values: dict[str, str]) -> RunResult:
        argv_template = getattr(self.env_spec, kind)
        assert argv_template is not None
        argv = render_argv(argv_template, values)
        log_file = CURRENT_LOG if kind == "current" else SWITCH_LOG
        log.info("command_deploy.run", env=self.env.name, kind=kind, argv=argv)
        result = await run_command(
            argv,
            cwd=self.spec.workdir,
            timeout=self.env_spec.timeout,
            env=command_env(self.spec.env),
            secrets=self.spec.secrets,
            output_path=self.runs / log_file,
            heartbeat=lambda d: _heartbeat({"step": kind, "env": self.env.name, **d}),
        )
        if not result.ok:
            raise self._error(
                f"{kind} command failed ({failure_line(result, self.env_spec.timeout)})", result
            )
        return result

    def _error(self, message: str, result: RunResult | None = None) -> ApplicationError:
        details = [{"tail": result.tail[-8000:], "log": str(result.output_path)}] if result else []
        return ApplicationError(
            f"{self.env.name}: {message}", *details, type=ErrorType.DEPLOY_FAILED, non_retryable=True
        )

    async def running(self) -> str | None:
        # Called holding the lock, so a command still running is a dead worker's: stop it
        # before asking, or it could switch versions under the answer.
        stop_orphan(self.runs / SWITCH_LOG)
        result = await self._run("current", self._values())
        try:
            return parse_current(result.stdout_tail)
        except CommandFailed as exc:
            raise self._error(f"current command {exc}", result) from None

    async def _verify(self, expected: str | None, after: str) -> None:
        """Require `current` to print `expected`; mirror what it printed either way."""
        printed = await self.running()
        if self.env.current() != printed:
            self.env.switch(printed)
        if printed != expected:
            raise self._error(
                f"after {after}, current printed {printed or 'nothing'} instead of {expected or 'nothing'}"
            )

    async def make_live(self, version: str, previous: str | None, package_dir: Path) -> None:
        values = self._values(version, previous) | {"package_dir": str(package_dir)}
        await self._run("deploy", values)
        await self._verify(version, f"deploying {version}")

    async def restore(self, version: str | None, removed: str) -> None:
        if version is None:
            if self.env_spec.undeploy is None:
                raise self._error(
                    f"nothing ran before {removed}, and without an undeploy command there is no "
                    f"rollback to nothing; stop {removed} by hand or add `undeploy` to the catalog"
                )
            await self._run("undeploy", self._values(removed))
            await self._verify(None, f"undeploying {removed}")
            return
        uses_folder = any("{release_dir}" in a or "{package_dir}" in a for a in self.env_spec.rollback or [])
        if uses_folder and not self.env.version_dir(version).is_dir():
            raise self._error(f"version {version} to restore is not staged in {self.env.base}")
        await self._run("rollback", self._values(version, removed))
        await self._verify(version, f"rolling back to {version}")
