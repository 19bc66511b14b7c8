"""The worker-side service catalog: commands, environments, probes, people, keys and roles.

The catalog is the only source of commands relman runs: a release request names a service
and a version, never a command. Commands are argv lists (never a shell string); their
arguments may hold placeholders from a fixed set per command kind (`{version}`,
`{package_dir}`, ...), each replaced by its value verbatim and never split or re-parsed.

Paths in the file are resolved against the catalog file's directory; path fields may use
`{catalog_dir}` and `{data_dir}` (the worker's data directory).

It is also the only source of who may do what: the people and their public keys, the
identity providers trusted to vouch for them, the roles per service and the change models.
`read_trust` reads that governance part alone, for an auditor who has the catalog file but
not the services' directories.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from relman.analysis.spec import AnalysisSpec
from relman.contracts import (
    AcceptanceCriteria,
    ChangeModel,
    ConflictMode,
    Criticality,
    Environment,
    GateTimeouts,
    PersonTrust,
    ProviderTrust,
    PublicKeyText,
    Role,
    RolloutStage,
    ServiceName,
    ServiceProfile,
    Slug,
    Trust,
    UserName,
    stages_problem,
)
from relman.identity.keys import key_id, parse_public, public_text, read_public_file

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
TRAIN_TEST_PLACEHOLDERS = frozenset({"envs_dir", "source_dir", "work_dir", "junit", "python"})
"""A train suite's: `{envs_dir}` holds every service's environments (`<service>/staging/...`)."""
HEALTH_PLACEHOLDERS = frozenset(
    {"version", "service", "environment", "env_dir", "release_dir", "source_dir", "python"}
)
PATH_PLACEHOLDERS = frozenset({"catalog_dir", "data_dir"})
# A command environment's commands (`type: command`). In `rollback`, `{version}` is the
# version to restore and `{previous_version}` the one removed; `{package_dir}` and
# `{release_dir}` are then that version's staged folder. `current` only asks what runs.
DEPLOY_PLACEHOLDERS = frozenset(
    {
        "version",
        "previous_version",
        "package_dir",
        "release_dir",
        "env_dir",
        "service",
        "environment",
        "python",
    }
)
CURRENT_PLACEHOLDERS = frozenset({"env_dir", "service", "environment", "python"})
UNDEPLOY_PLACEHOLDERS = frozenset({"version", "env_dir", "service", "environment", "python"})
ENV_COMMANDS = {
    "deploy": DEPLOY_PLACEHOLDERS,
    "rollback": DEPLOY_PLACEHOLDERS,
    "current": CURRENT_PLACEHOLDERS,
    "undeploy": UNDEPLOY_PLACEHOLDERS,
}
"""Each command field of a command environment and the placeholders it may use."""

MAX_KEYS = 10
"""Keys per person or provider: enough for a rotation or two (the contracts' bound)."""
SECRET_MIN_LENGTH = 4
"""Shorter values would be masked wherever they happen to occur in output; refused at start."""
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

T = TypeVar("T")


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


class KeySpec(_Strict):
    """Public keys inline (`keys`) or in `.pub` files (`key_files`, read when the catalog loads)."""

    keys: list[str] = Field(default_factory=list, max_length=MAX_KEYS)
    key_files: list[Path] = Field(default_factory=list, max_length=MAX_KEYS)
    min_keys: ClassVar[int] = 0
    _public: list[str] = PrivateAttr(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        # Normalised, so the same key written two ways is still recognised as one.
        return [public_text(parse_public(text)) for text in v]

    @field_validator("key_files", mode="before")
    @classmethod
    def _paths(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, list):
            return v
        return [_resolve_path(str(p), info) for p in v]

    @model_validator(mode="after")
    def _read_files(self) -> KeySpec:
        found = [*self.keys, *(read_public_file(path) for path in self.key_files)]
        public = list(dict.fromkeys(found))
        if len(public) < self.min_keys:
            raise ValueError("give at least one public key (keys or key_files)")
        if len(public) > MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS} keys (got {len(public)})")
        self._public = public
        return self

    @property
    def public_keys(self) -> list[str]:
        """Every key, inline and from files, each once."""
        return list(self._public)


class ProviderSpec(KeySpec):
    """An identity provider (the web console) and the people it may vouch for."""

    min_keys: ClassVar[int] = 1
    vouches_for: list[UserName] = Field(default_factory=list)


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
    allowed: ClassVar[frozenset[str]] = TEST_PLACEHOLDERS
    """The placeholders this kind of suite may use (a train's suites have their own)."""

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> list[str]:
        return _check_argv(v, cls.allowed)

    @field_validator("junit", "cwd")
    @classmethod
    def _template(cls, v: str) -> str:
        unknown = placeholders(v) - cls.allowed
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}")
        return v


TrainSuiteName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,39}$")]


class TrainSuiteSpec(SuiteSpec):
    """A train-level suite (`train_suites:`): run once on the combined staging of a train's
    components, after every one is prepared and before the first wave."""

    name: TrainSuiteName  # type: ignore[assignment]
    workdir: Path = Path(".")
    """Where `{source_dir}` points (relative to the catalog); relative executables resolve here."""
    allowed: ClassVar[frozenset[str]] = TRAIN_TEST_PLACEHOLDERS

    @field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, v: Any, info: ValidationInfo) -> Path:
        path = _resolve_path(str(v), info)
        if not path.is_dir():
            raise ValueError(f"directory {path} does not exist")
        return path

    @model_validator(mode="after")
    def _executable(self) -> TrainSuiteSpec:
        _check_executable(self.command, self.workdir)
        return self


class EnvironmentSpec(_Strict):
    """Where a version goes live: a `directory` (a `current` symlink) or `command`s.

    A command environment still stages each version into `base_dir/<version>` (its commands
    may read it as `{release_dir}`), keeps its deploy records there, and mirrors the version
    `current` reports as the `base_dir/current` symlink that exposure and health read.
    """

    type: Literal["directory", "command"] = "directory"
    base_dir: Path
    """Holds one folder per version and the `current` symlink; created when first used."""
    deploy: list[str] | None = None
    """Argv making `{version}` run; must succeed again when it already runs (a retry)."""
    rollback: list[str] | None = None
    """Argv putting back the named `{version}` (the one the deploy replaced)."""
    current: list[str] | None = None
    """Argv printing the version that runs now (one line; nothing when none does)."""
    undeploy: list[str] | None = None
    """Optional argv stopping `{version}` when a rollback has nothing to put back (the
    environment's first deploy); without it such a rollback is refused."""
    timeout: float = Field(default=300, gt=0, le=600)
    """Seconds each command may take; the deploy activity itself is cut at 15 minutes."""

    @field_validator("base_dir", mode="before")
    @classmethod
    def _path(cls, v: Any, info: ValidationInfo) -> Path:
        return _resolve_path(str(v), info)

    @field_validator("deploy", "rollback", "current", "undeploy", mode="before")
    @classmethod
    def _argv(cls, v: Any, info: ValidationInfo) -> list[str] | None:
        assert info.field_name is not None
        return None if v is None else _check_argv(v, ENV_COMMANDS[info.field_name])

    @model_validator(mode="after")
    def _commands_match_type(self) -> EnvironmentSpec:
        given = [k for k in ENV_COMMANDS if getattr(self, k) is not None]
        if self.type == "directory" and given:
            raise ValueError(f"{', '.join(given)}: only an environment of type: command runs commands")
        missing = [k for k in ("deploy", "rollback", "current") if getattr(self, k) is None]
        if self.type == "command" and missing:
            raise ValueError(f"type: command needs {', '.join(missing)} (argv lists)")
        return self

    def commands(self) -> Iterator[tuple[str, list[str]]]:
        """(field, argv) of each command this environment runs."""
        for kind in ENV_COMMANDS:
            argv = getattr(self, kind)
            if argv is not None:
                yield kind, argv


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


class ExposureSpec(_Strict):
    """How relman exposes a service through flagd and reads the flag back before a bake."""

    flag: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")] | None = None
    """The flag key services evaluate; the service name when unset."""
    sample_keys: int = Field(default=2000, ge=100, le=100_000)
    """Synthetic targeting keys evaluated through the OpenFeature SDK on each read-back."""
    reload_timeout: float = Field(default=10, gt=0, le=30)
    """Seconds the read-back waits for the provider to serve the write before failing the stage
    (at most 30: the whole exposure step, lock wait included, has 45 s)."""


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


def _unique(names: list[str]) -> list[str]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} listed twice")
    return names


class ServiceRoles(_Strict):
    """Who may do what for one service, and its stages (which change models may name)."""

    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    cab: CabSpec
    ecab: list[UserName] = Field(default_factory=list)
    operators: list[UserName] = Field(default_factory=list)
    """Pause, resume, promote, abort."""
    change_managers: list[UserName] = Field(default_factory=list)
    """Let one exposure step through one closed window."""
    release_managers: list[UserName] = Field(default_factory=list)
    """Amend the plan while the plan gate is open."""
    change_models: list[ChangeModel] = Field(default_factory=list, max_length=20)
    """The only changes that may be `standard` (pre-approved, no CAB gate)."""

    @field_validator("stages")
    @classmethod
    def _rollout(cls, v: list[RolloutStage]) -> list[RolloutStage]:
        if problem := stages_problem(v):
            raise ValueError(problem)
        return v

    @field_validator("ecab", "operators", "change_managers", "release_managers")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return _unique(v)

    @field_validator("change_models")
    @classmethod
    def _known_stages(cls, v: list[ChangeModel], info: ValidationInfo) -> list[ChangeModel]:
        _unique([m.name for m in v])
        if "stages" not in info.data:
            return v  # the stages are invalid, and that is reported already
        known = [s.name for s in info.data["stages"]]
        for model in v:
            unknown = [s for s in model.stages if s not in known]
            if unknown:
                raise ValueError(
                    f"change model {model.name}: unknown stage(s) {', '.join(unknown)}; "
                    f"the service's stages are {', '.join(known)}"
                )
        return v

    def roles(self) -> dict[Role, list[str]]:
        return {
            Role.CAB: list(self.cab.members),
            Role.ECAB: list(self.ecab),
            Role.OPERATORS: list(self.operators),
            Role.CHANGE_MANAGERS: list(self.change_managers),
            Role.RELEASE_MANAGERS: list(self.release_managers),
        }

    def named_people(self) -> Iterator[tuple[str, list[str]]]:
        """(field, names) for every list of people: each must be declared when signing."""
        yield "cab.members", list(self.cab.members)
        for role in ("ecab", "operators", "change_managers", "release_managers"):
            yield role, list(getattr(self, role))
        for i, model in enumerate(self.change_models):
            yield f"change_models.{i}.requesters", list(model.requesters)


class ServiceSpec(ServiceRoles):
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
    analysis: AnalysisSpec | None = None
    exposure: ExposureSpec = Field(default_factory=ExposureSpec)
    """Health from Prometheus (Argo-style metrics, a canary judge): when given, it replaces
    the `health` probe, which stays as the fallback where no Prometheus runs."""
    review_period: timedelta = timedelta(days=1)
    timeouts: GateTimeouts = Field(default_factory=GateTimeouts)
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)
    """Pass rate every suite must reach (a suite may demand more)."""
    relationships: list[RelationshipSpec] = Field(default_factory=list)
    conflicts: ConflictMode = ConflictMode.WARN
    """What another open release on this CI or a related one, or a closing window on a related
    CI's service, does to a release: `off` (not looked for), `warn` (shown in the status and
    the UI details) or `block` (the release waits as for a closed window)."""

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
        for env, env_spec in self.environments.items():
            commands += [(f"environments.{env.value}.{kind}", argv) for kind, argv in env_spec.commands()]
        for where, argv in commands:
            try:
                _check_executable(argv, self.workdir)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return self

    def env_dir(self, environment: Environment) -> Path:
        return self.environments[environment].base_dir


def _lookup(services: Mapping[str, T], name: str) -> T:
    try:
        return services[name]
    except KeyError:
        raise UnknownService(name, sorted(services)) from None


class CatalogTrust(_Strict):
    """The governance part of a catalog: a Trust per service and the worker's evidence keys."""

    path: Path
    services: dict[ServiceName, Trust]
    evidence_keys: list[PublicKeyText] = Field(default_factory=list)
    """Keys that sign release evidence (`relman verify` checks the envelope against them)."""

    def service(self, name: str) -> Trust:
        """The trust of one service; `UnknownService` when the catalog lacks it."""
        return _lookup(self.services, name)


class _Governance(_Strict):
    """The top level of a catalog that says who may act: people, providers, evidence keys."""

    path: Path = Path("catalog.yaml")
    data_dir: Path = Path(".")
    signatures: Literal["required", "off"] = "required"
    """`off` only for throw-away setups: names in messages are then taken on trust."""
    people: dict[UserName, KeySpec] = Field(default_factory=dict)
    identity_providers: dict[Slug, ProviderSpec] = Field(default_factory=dict)
    evidence: KeySpec = Field(default_factory=KeySpec)
    services: Mapping[ServiceName, ServiceRoles]

    @model_validator(mode="after")
    def _one_owner_per_key(self) -> _Governance:
        # A key that speaks for two owners would let one of them sign as the other.
        owners: dict[str, str] = {}
        for owner, spec in self._key_owners():
            for key in spec.public_keys:
                other = owners.setdefault(key, owner)
                if other != owner:
                    raise ValueError(
                        f"{owner}: key {key_id(key)} is also listed under {other}; a key speaks for one owner"
                    )
        return self

    @model_validator(mode="after")
    def _people_declared(self) -> _Governance:
        if self.signatures == "off":
            return self
        vouched = {name for spec in self.identity_providers.values() for name in spec.vouches_for}
        for name, spec in self.people.items():
            if not spec.public_keys and name not in vouched:
                raise ValueError(
                    f"people.{name}: no public key (keys or key_files) and no identity provider "
                    f"vouches for {name}, so {name} could never sign"
                )
        named = [
            (f"identity_providers.{n}.vouches_for", list(p.vouches_for))
            for n, p in self.identity_providers.items()
        ]
        for service, roles in self.services.items():
            named += [(f"services.{service}.{field}", names) for field, names in roles.named_people()]
        for where, names in named:
            for name in names:
                if name not in self.people:
                    raise ValueError(
                        f"{where}: {name} is not a declared person; declare {name} under `people` "
                        "with a public key (or set `signatures: off`)"
                    )
        return self

    def _key_owners(self) -> Iterator[tuple[str, KeySpec]]:
        for name, person in self.people.items():
            yield f"people.{name}", person
        for name, provider in self.identity_providers.items():
            yield f"identity_providers.{name}", provider
        yield "evidence", self.evidence

    def service_trust(self, name: str) -> Trust:
        """Who may do what for one service, with which keys; `UnknownService` if unknown."""
        roles = _lookup(self.services, name)
        return Trust(
            signatures=self.signatures,
            people=[PersonTrust(name=n, keys=p.public_keys) for n, p in self.people.items()],
            providers=[
                ProviderTrust(name=n, keys=p.public_keys, vouches_for=list(p.vouches_for))
                for n, p in self.identity_providers.items()
            ],
            roles=roles.roles(),
            quorum=roles.cab.quorum,
            change_models=list(roles.change_models),
        )

    def trust(self) -> CatalogTrust:
        return CatalogTrust(
            path=self.path,
            services={name: self.service_trust(name) for name in self.services},
            evidence_keys=self.evidence.public_keys,
        )


class _ServiceRolesOnly(ServiceRoles):
    # The rest of a service (workdir, commands) is the worker's business, not an auditor's.
    model_config = ConfigDict(extra="ignore")


class _TrustFile(_Governance):
    model_config = ConfigDict(extra="ignore")
    services: dict[ServiceName, _ServiceRolesOnly]


class Catalog(_Governance):
    services: dict[ServiceName, ServiceSpec]
    configuration_items: list[CiSpec] = Field(default_factory=list)
    train_suites: list[TrainSuiteSpec] = Field(default_factory=list, max_length=20)
    """Suites a train's manifest may name (`tests:`), run on the combined staging."""

    @field_validator("train_suites")
    @classmethod
    def _unique_train_suites(cls, v: list[TrainSuiteSpec]) -> list[TrainSuiteSpec]:
        if len({s.name for s in v}) != len(v):
            raise ValueError("a train suite name appears twice")
        return v

    def train_suite(self, name: str) -> TrainSuiteSpec:
        return next(s for s in self.train_suites if s.name == name)

    @property
    def envs_dir(self) -> Path:
        """`{data_dir}/envs`: where the example catalogs keep every service's environments."""
        return self.data_dir / "envs"

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
        return _lookup(self.services, name)

    def service_relationships(self) -> list[tuple[str, str, str]]:
        """Every declared relationship as `(service, type, target)`, a target that is a service's
        CI named by that service (so a train's ordering speaks of services), others by CI name."""
        by_ci = {spec.ci_name or name: name for name, spec in self.services.items()}
        return [
            (name, rel.type, by_ci.get(rel.target, rel.target))
            for name, spec in self.services.items()
            for rel in spec.relationships
        ]

    def profile(self, name: str) -> ServiceProfile:
        """The workflow-facing view of a service: trust (keys, roles), stages, acceptance, timeouts."""
        spec = self.service(name)
        return ServiceProfile(
            service=name,
            ci_name=spec.ci_name or name,
            criticality=spec.criticality,
            trust=self.service_trust(name),
            stages=list(spec.stages),
            acceptance=AcceptanceCriteria(
                min_pass_rate=spec.min_pass_rate,
                max_error_rate=spec.health.max_error_rate,
                max_latency_ms=spec.health.max_latency_ms,
            ),
            review_period=spec.review_period,
            timeouts=spec.timeouts,
            conflicts=spec.conflicts,
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


def service_relationships_of(path: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """Every service's declared relationships as `(service, type, target)`, read without
    validating the services, as `service_names`; a target that is a service's CI is named by
    that service (as `Catalog.service_relationships`), so a client orders a train as the
    worker will. An entry that is not a mapping with a type and a target is left out here:
    the worker's full load of the catalog names it.
    """
    file = Path(path).expanduser()
    services = _read_mapping(file).get("services")
    if not isinstance(services, dict):
        raise CatalogError(f"{file.name}: the catalog must be a mapping with a `services` key")
    specs = {str(name): spec for name, spec in services.items() if isinstance(spec, dict)}
    by_ci = {str(spec.get("ci_name") or name): name for name, spec in specs.items()}
    found = []
    for name, spec in specs.items():
        relationships = spec.get("relationships")
        for rel in relationships if isinstance(relationships, list) else []:
            if isinstance(rel, dict) and rel.get("type") and rel.get("target"):
                target = str(rel["target"])
                found.append((name, str(rel["type"]), by_ci.get(target, target)))
    return found


def train_suite_names(path: str | os.PathLike[str]) -> list[str]:
    """The train suites a catalog file declares (`train_suites:`), read without validating."""
    file = Path(path).expanduser()
    suites = _read_mapping(file).get("train_suites") or []
    if not isinstance(suites, list):
        raise CatalogError(f"{file.name}: train_suites: must be a list of suites")
    return sorted(str(s["name"]) for s in suites if isinstance(s, dict) and "name" in s)


def people_names(path: str | os.PathLike[str]) -> list[str]:
    """The people a catalog file declares, read without validating anything else.

    The demo and tests make these people's keys before the catalog, which reads their
    `.pub` files, can load.
    """
    file = Path(path).expanduser()
    people = _read_mapping(file).get("people") or {}
    if not isinstance(people, dict):
        raise CatalogError(f"{file.name}: people: must be a mapping of name to keys")
    return sorted(str(name) for name in people)


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


G = TypeVar("G", bound=_Governance)


def _validate(model: type[G], path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> G:
    file = Path(path).expanduser().resolve()
    raw = _read_mapping(file)
    data_root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or file.parent / ".relman").expanduser()
    if not data_root.is_absolute():
        data_root = Path.cwd() / data_root
    context = {"catalog_dir": file.parent, "data_dir": data_root}
    try:
        return model.model_validate({**raw, "path": file, "data_dir": data_root}, context=context)
    except ValidationError as exc:
        raise CatalogError(_format_errors(file, exc)) from None


def load_catalog(path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate a catalog file; `CatalogError` says what is wrong and where.

    `data_dir` fills `{data_dir}` in paths; default `$RELMAN_DATA_DIR`, else
    `<catalog dir>/.relman`.
    """
    return _validate(Catalog, path, data_dir)


def read_trust(
    path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None
) -> CatalogTrust:
    """The governance part of a catalog file: a Trust per service and the evidence keys.

    Validated as `load_catalog` validates it (keys, key files, roles, change models), but the
    services' workdirs, commands and executables are not looked at: an auditor verifying
    release evidence offline has the catalog file, not the services' directories.
    """
    return _validate(_TrustFile, path, data_dir).trust()
