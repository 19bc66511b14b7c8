"""The worker-side service catalog: commands, environments, probes and CAB rosters per service.

The catalog is the only source of commands relman runs: a release request names a service
and a version, never a command. Commands are argv lists (never a shell string); their
arguments may hold placeholders from a fixed set per command kind (`{version}`,
`{package_dir}`, ...), each replaced by its value verbatim and never split or re-parsed.

Paths in the file are resolved against the catalog file's directory; path fields may use
`{catalog_dir}` and `{data_dir}` (the worker's data directory).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from relman.contracts import (
    AcceptanceCriteria,
    Criticality,
    Environment,
    GateTimeouts,
    RolloutStage,
    ServiceName,
    ServiceProfile,
    UserName,
)

CATALOG_ENV = "RELMAN_CATALOG"
"""Environment variable naming the catalog file (read by the worker's settings)."""
DATA_DIR_ENV = "RELMAN_DATA_DIR"

# Placeholders each kind of command may use; anything else is refused at load time.
BUILD_PLACEHOLDERS = frozenset(
    {"version", "commit", "service", "package_dir", "work_dir", "source_dir", "python"}
)
TEST_PLACEHOLDERS = frozenset(
    {"version", "service", "env_dir", "release_dir", "source_dir", "work_dir", "junit", "python"}
)
HEALTH_PLACEHOLDERS = frozenset(
    {"version", "service", "environment", "env_dir", "release_dir", "source_dir", "python"}
)
PATH_PLACEHOLDERS = frozenset({"catalog_dir", "data_dir"})

SECRET_MIN_LENGTH = 4
"""Shorter values would be masked wherever they happen to occur in output; refused at start."""
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message names file, service and field."""


class UnknownService(KeyError):
    """A release names a service the catalog does not know."""

    def __init__(self, service: str, known: list[str]) -> None:
        super().__init__(service)
        self.service = service
        self.known = known

    def __str__(self) -> str:
        return f"unknown service {self.service!r}; the catalog knows: {', '.join(self.known) or 'none'}"


def placeholders(text: str) -> set[str]:
    """Names of the `{placeholders}` in one argument."""
    return set(_PLACEHOLDER.findall(text))


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace each `{name}` by its value verbatim (no shell, no splitting)."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise CatalogError(f"placeholder {{{name}}} has no value here")
        return values[name]

    return _PLACEHOLDER.sub(repl, text)


def render_argv(argv: list[str], values: dict[str, str]) -> list[str]:
    """The argv with its placeholders replaced; one argument stays one argument."""
    values = {"python": sys.executable, **values}
    return [substitute(arg, values) for arg in argv]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ctx(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


def _check_argv(value: Any, allowed: frozenset[str]) -> list[str]:
    if isinstance(value, str):
        raise ValueError(
            "must be an argv list such as [python, build.py], not a string: nothing runs via a shell"
        )
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty argv list")
    if not all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in value):
        raise ValueError("every argument must be a string")
    argv = [str(a) for a in value]
    if not argv[0].strip():
        raise ValueError("the executable (first argument) is empty")
    for arg in argv:
        unknown = placeholders(arg) - allowed
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)} in {arg!r}; allowed: {sorted(allowed)}"
            )
    return argv


def _check_executable(argv: list[str], source_dir: Path) -> None:
    exe = argv[0]
    if exe == "{python}":
        return
    if placeholders(exe):
        raise ValueError(f"executable {exe!r}: only {{python}} may be a placeholder in the first argument")
    if "/" in exe:
        path = Path(exe) if os.path.isabs(exe) else source_dir / exe
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"executable {exe!r} not found or not executable (looked at {path})")
    elif shutil.which(exe) is None:
        raise ValueError(f"executable {exe!r} not found on PATH")


def _resolve_path(value: str, info: ValidationInfo) -> Path:
    ctx = _ctx(info)
    unknown = placeholders(value) - PATH_PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)}; paths may use {sorted(PATH_PLACEHOLDERS)}"
        )
    catalog_dir = Path(ctx.get("catalog_dir", "."))
    text = substitute(value, {"catalog_dir": str(catalog_dir), "data_dir": str(ctx.get("data_dir", "."))})
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = catalog_dir / path
    return Path(os.path.normpath(path))


class BuildSpec(_Strict):
    command: list[str]
    """Argv run in the service's workdir; placeholders: BUILD_PLACEHOLDERS."""
    timeout: float = Field(default=600, gt=0, le=24 * 3600)
    artifacts: list[str] = Field(min_length=1)
    """Globs relative to `{package_dir}`; each must match at least one file."""
    deploy_instructions: str = "Copy the package to <env>/<version> and switch the `current` symlink."

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> list[str]:
        return _check_argv(v, BUILD_PLACEHOLDERS)

    @field_validator("artifacts")
    @classmethod
    def _relative(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if os.path.isabs(pattern) or ".." in Path(pattern).parts:
                raise ValueError(f"artifact {pattern!r} must be relative to the package dir")
        return v


SuiteName = Literal["unit", "integration", "system", "security", "uat"]


class SuiteSpec(_Strict):
    name: SuiteName
    command: list[str]
    """Argv; placeholders: TEST_PLACEHOLDERS. It must write JUnit XML to `junit`."""
    timeout: float = Field(default=600, gt=0, le=24 * 3600)
    junit: str = "{junit}"
    """Where the command writes its JUnit XML; `{junit}` is a fresh path relman picks."""
    cwd: str = "{source_dir}"
    """Directory to run in, e.g. `{release_dir}` to test the deployed staging copy."""
    required_pass_rate: float = Field(default=1.0, ge=0, le=1)

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> list[str]:
        return _check_argv(v, TEST_PLACEHOLDERS)

    @field_validator("junit", "cwd")
    @classmethod
    def _template(cls, v: str) -> str:
        unknown = placeholders(v) - TEST_PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}")
        return v


class EnvironmentSpec(_Strict):
    base_dir: Path
    """Holds one folder per version and the `current` symlink; created when first used."""

    @field_validator("base_dir", mode="before")
    @classmethod
    def _path(cls, v: Any, info: ValidationInfo) -> Path:
        return _resolve_path(str(v), info)


class HealthSpec(_Strict):
    """Where metrics come from (exactly one of http, file, command) and how to judge them.

    The metrics are a JSON object with `error_rate`, a latency (`latency_ms`, or
    `latency_p95_ms`) and a sample count (`samples` or `requests`).
    """

    http: str | None = None
    file: str | None = None
    command: list[str] | None = None
    cwd: str = "{release_dir}"
    timeout: float = Field(default=30, gt=0, le=3600)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ms: float = Field(default=500, gt=0)
    min_samples: int = Field(default=10, ge=1)
    margin: float = Field(default=0.2, ge=0, lt=1)
    """Within this fraction of a threshold (either side) the verdict is marginal."""
    max_age: float = Field(default=300, gt=0)
    """A metrics `file` not written for longer than this (seconds) is stale: no_data."""

    @field_validator("http")
    @classmethod
    def _local_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or parts.hostname not in _LOCAL_HOSTS:
            raise ValueError(f"{v!r}: the metrics URL must be http(s) on localhost")
        return v

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> list[str] | None:
        return None if v is None else _check_argv(v, HEALTH_PLACEHOLDERS)

    @field_validator("file", "cwd")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        unknown = placeholders(v or "") - HEALTH_PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> HealthSpec:
        given = [k for k in ("http", "file", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one metrics source of http, file, command (got {given or 'none'})"
            )
        return self


class CabSpec(_Strict):
    members: list[UserName] = Field(min_length=1)
    quorum: int = Field(ge=1)

    @model_validator(mode="after")
    def _quorum(self) -> CabSpec:
        if self.quorum > len(self.members):
            raise ValueError(f"quorum {self.quorum} exceeds the roster size {len(self.members)}")
        if len(set(self.members)) != len(self.members):
            raise ValueError("a CAB member is listed twice")
        return self


CiName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
CiClass = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class RelationshipSpec(_Strict):
    type: Literal["depends_on", "runs_on"]
    """This service's CI `type` `target`, e.g. greeter runs_on local-host."""
    target: CiName


class CiSpec(_Strict):
    """A configuration item that is not a catalog service (a host, a database)."""

    name: CiName
    ci_class: CiClass = "server"
    description: str = ""
    owner: UserName | None = None
    criticality: Criticality = Criticality.MEDIUM


class ServiceSpec(_Strict):
    description: str = ""
    ci_name: CiName | None = None
    """The CMDB name of the service's CI; defaults to the service name."""
    ci_class: CiClass = "application"
    owner: UserName | None = None
    criticality: Criticality = Criticality.MEDIUM
    workdir: Path
    """Source directory; build commands run here. Must exist."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the service's commands (never put secrets in the catalog)."""
    secrets: list[SecretName] = Field(default_factory=list, max_length=20)
    """Names of worker environment variables the commands receive (a registry token...);
    their values are masked (`***`) in all output relman keeps, so never reach the
    history, the CMDB or a log."""
    build: BuildSpec
    tests: list[SuiteSpec] = Field(default_factory=list)
    environments: dict[Environment, EnvironmentSpec]
    health: HealthSpec
    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    cab: CabSpec
    ecab: list[UserName] = Field(default_factory=list)
    review_period: timedelta = timedelta(days=1)
    timeouts: GateTimeouts = Field(default_factory=GateTimeouts)
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)
    """Pass rate every suite must reach (a suite may demand more)."""
    relationships: list[RelationshipSpec] = Field(default_factory=list)

    @field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, v: Any, info: ValidationInfo) -> Path:
        path = _resolve_path(str(v), info)
        if not path.is_dir():
            raise ValueError(f"directory {path} does not exist")
        return path

    @field_validator("secrets")
    @classmethod
    def _not_the_workers_own(cls, v: list[str]) -> list[str]:
        own = [name for name in v if name.startswith(("RELMAN_", "TEMPORAL_"))]
        if own:
            raise ValueError(f"{', '.join(own)}: the worker's own settings are never passed to commands")
        return v

    @field_validator("environments")
    @classmethod
    def _both_envs(cls, v: dict[Environment, EnvironmentSpec]) -> dict[Environment, EnvironmentSpec]:
        missing = [e.value for e in Environment if e not in v]
        if missing:
            raise ValueError(f"missing environment(s): {', '.join(missing)}")
        dirs = [spec.base_dir for spec in v.values()]
        if len(set(dirs)) != len(dirs):
            raise ValueError("staging and production must not share a base directory")
        return v

    @field_validator("stages")
    @classmethod
    def _increasing(cls, v: list[RolloutStage]) -> list[RolloutStage]:
        for before, after in itertools.pairwise(v):
            if after.percent <= before.percent:
                raise ValueError(
                    f"stage percents must increase: {before.name}={before.percent} "
                    f"then {after.name}={after.percent}"
                )
        if len({s.name for s in v}) != len(v):
            raise ValueError("stage names must be unique")
        return v

    @field_validator("tests")
    @classmethod
    def _unique_suites(cls, v: list[SuiteSpec]) -> list[SuiteSpec]:
        if len({s.name for s in v}) != len(v):
            raise ValueError("a suite name appears twice")
        return v

    @model_validator(mode="after")
    def _executables(self) -> ServiceSpec:
        # Checked here because relative executables resolve against the workdir.
        commands: list[tuple[str, list[str]]] = [("build.command", self.build.command)]
        commands += [(f"tests.{i}.command", s.command) for i, s in enumerate(self.tests)]
        if self.health.command is not None:
            commands.append(("health.command", self.health.command))
        for where, argv in commands:
            try:
                _check_executable(argv, self.workdir)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return self

    def env_dir(self, environment: Environment) -> Path:
        return self.environments[environment].base_dir


class Catalog(_Strict):
    services: dict[ServiceName, ServiceSpec]
    configuration_items: list[CiSpec] = Field(default_factory=list)
    path: Path = Path("catalog.yaml")
    data_dir: Path = Path(".")

    @model_validator(mode="after")
    def _relationship_targets(self) -> Catalog:
        known = {spec.ci_name or name for name, spec in self.services.items()}
        known |= {ci.name for ci in self.configuration_items}
        for name, spec in self.services.items():
            for i, rel in enumerate(spec.relationships):
                if rel.target not in known:
                    raise ValueError(
                        f"services.{name}.relationships.{i}.target: unknown CI {rel.target!r}; "
                        "declare it under configuration_items or as a service"
                    )
        return self

    def secret_problems(self, environ: Mapping[str, str]) -> list[str]:
        """Declared secrets that `environ` (the worker's) lacks or sets too short to mask."""
        problems = []
        for name, spec in self.services.items():
            for secret in spec.secrets:
                value = environ.get(secret)
                if value is None:
                    problems.append(
                        f"services.{name}.secrets: {secret} is not set in the worker's environment"
                    )
                elif len(value) < SECRET_MIN_LENGTH:
                    problems.append(
                        f"services.{name}.secrets: {secret} is shorter than {SECRET_MIN_LENGTH} characters"
                    )
        return problems

    def service(self, name: str) -> ServiceSpec:
        """The spec of one service; `UnknownService` when the catalog lacks it."""
        try:
            return self.services[name]
        except KeyError:
            raise UnknownService(name, sorted(self.services)) from None

    def profile(self, name: str) -> ServiceProfile:
        """The workflow-facing view of a service: roster, stages, acceptance, timeouts."""
        spec = self.service(name)
        return ServiceProfile(
            service=name,
            ci_name=spec.ci_name or name,
            criticality=spec.criticality,
            cab_members=list(spec.cab.members),
            cab_quorum=spec.cab.quorum,
            ecab_members=list(spec.ecab),
            stages=list(spec.stages),
            acceptance=AcceptanceCriteria(
                min_pass_rate=spec.min_pass_rate,
                max_error_rate=spec.health.max_error_rate,
                max_latency_ms=spec.health.max_latency_ms,
            ),
            review_period=spec.review_period,
            timeouts=spec.timeouts,
        )


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path.name}: {loc}: {msg}" if loc else f"{path.name}: {msg}")
    return "\n".join(lines)


def service_names(path: str | os.PathLike[str]) -> list[str]:
    """The service names a catalog file declares, read without validating the services.

    Clients use it to refuse an unknown service before a release starts: they may see the
    catalog file without the services' directories and executables the worker needs.
    """
    file = Path(path).expanduser()
    services = _read_mapping(file).get("services")
    if not isinstance(services, dict):
        raise CatalogError(f"{file.name}: the catalog must be a mapping with a `services` key")
    return sorted(str(name) for name in services)


def _read_mapping(file: Path) -> dict[Any, Any]:
    """The catalog file parsed as YAML; `CatalogError` unless it is a readable mapping."""
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise CatalogError(f"{file}: cannot read the catalog: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file.name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{file.name}: the catalog must be a mapping with a `services` key")
    return raw


def load_catalog(path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate a catalog file; `CatalogError` says what is wrong and where.

    `data_dir` fills `{data_dir}` in paths; default `$RELMAN_DATA_DIR`, else
    `<catalog dir>/.relman`.
    """
    file = Path(path).expanduser().resolve()
    raw = _read_mapping(file)
    data_root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or file.parent / ".relman").expanduser()
    if not data_root.is_absolute():
        data_root = Path.cwd() / data_root
    context = {"catalog_dir": file.parent, "data_dir": data_root}
    try:
        return Catalog.model_validate({**raw, "path": file, "data_dir": data_root}, context=context)
    except ValidationError as exc:
        raise CatalogError(_format_errors(file, exc)) from None
