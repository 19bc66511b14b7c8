"""relman's settings (RELMAN_* variables) and the one way to connect to Temporal.

Defaults, said once (the worker logs what it uses when it starts):
- the catalog is RELMAN_CATALOG; unset, `./catalog.yaml` in the current directory; and only
  when run inside relman's own source checkout without one, the checkout's
  `examples/catalog.yaml`. Anywhere else there is no default catalog: the worker refuses to
  start, naming RELMAN_CATALOG, and the client checks service names on the worker only.
- the data directory (SQLite CMDB, environments, flags, packages, keys) is RELMAN_DATA_DIR;
  unset, `./.relman` in the current directory.

The Temporal connection is configured the Temporal way: `temporal.toml` profiles,
`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`
(read by `temporalio.envconfig`). Everything relman-specific lives in `Settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from relman.contracts import TASK_QUEUE
from relman.errors import ConfigError, RelmanError
from relman.identity.keys import WORKER

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

TEMPORAL_ENV_VARS = frozenset(
    {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_API_KEY",
        "TEMPORAL_PROFILE",
        "TEMPORAL_CONFIG_FILE",
        "TEMPORAL_TLS",
        "TEMPORAL_TLS_CLIENT_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_CERT_DATA",
        "TEMPORAL_TLS_CLIENT_KEY_PATH",
        "TEMPORAL_TLS_CLIENT_KEY_DATA",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
        "TEMPORAL_TLS_SERVER_NAME",
        "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
        "TEMPORAL_GRPC_META",
    }
)
"""Variables `temporalio.envconfig` reads (docker-compose is checked against them)."""


CATALOG_FILE = "catalog.yaml"
"""The catalog's file name in the current directory when RELMAN_CATALOG is unset."""
EXAMPLE_CATALOG = PACKAGE_ROOT / "examples" / CATALOG_FILE
"""The example catalog: the default only inside relman's own source checkout."""


def in_checkout(directory: Path) -> bool:
    """Whether `directory` is relman's source checkout or inside it (not an installed package)."""
    directory = directory.resolve()
    inside = directory == PACKAGE_ROOT or PACKAGE_ROOT in directory.parents
    return inside and (PACKAGE_ROOT / "pyproject.toml").is_file() and EXAMPLE_CATALOG.is_file()


def default_catalog(cwd: Path | None = None) -> Path:
    """The catalog when RELMAN_CATALOG is unset: `./catalog.yaml` if there is one, else the
    checkout's example when `cwd` is inside the checkout, else `./catalog.yaml` (missing:
    `Settings.require_catalog` says so)."""
    cwd = (cwd or Path.cwd()).resolve()
    here = cwd / CATALOG_FILE
    if not here.is_file() and in_checkout(cwd):
        return EXAMPLE_CATALOG
    return here


class Settings(BaseSettings):
    """relman's own settings, read from RELMAN_* environment variables (or `.env`)."""

    model_config = SettingsConfigDict(env_prefix="RELMAN_", env_file=".env", extra="ignore")

    catalog: Path = Field(default_factory=default_catalog)
    """Service catalog (YAML): commands, environments and CAB roster per service; unset,
    `./catalog.yaml`, or inside relman's checkout its `examples/catalog.yaml`."""
    data_dir: Path = Path(".relman")
    """Where the SQLite CMDB, environments, flags and packages live by default; unset,
    `./.relman` in the current directory."""
    keys_dir: Path = Field(default=None, validate_default=True)
    """Private keys (`<name>.key`, mode 0600) and their `.pub` files; default `<data_dir>/keys`."""
    evidence_key: Path = Field(default=None, validate_default=True)
    """The worker's private key that signs release evidence; default
    `<keys_dir>/relman-worker.key`."""
    key_passphrase: SecretStr | None = None
    """Unlocks passphrase-protected keys; a SecretStr so no repr or log shows it."""
    cmdb_url: str | None = None
    """SQLAlchemy URL of the CMDB; default `sqlite:///<data_dir>/cmdb.sqlite`."""
    task_queue: str = Field(default=TASK_QUEUE, min_length=1, max_length=200)
    activity_task_queue: str | None = Field(default=None, min_length=1, max_length=200)
    """Optional separate queue for heavy activities (build, tests)."""
    webhook_url: str | None = None
    """Notifications are also POSTed here when set."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Prometheus `/metrics` from the SDK runtime on this port when set."""
    metrics_host: str = "127.0.0.1"
    otlp_endpoint: str | None = None
    """OpenTelemetry traces to this OTLP/gRPC endpoint (e.g. http://localhost:4317)."""
    trace_console: bool = False
    """Print OpenTelemetry spans to stderr (when no OTLP endpoint is set)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    graceful_shutdown_seconds: float = Field(default=30.0, ge=0, le=3600)
    """How long a stopping worker lets running activities finish before cancelling them."""

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("keys_dir", "evidence_key", mode="before")
    @classmethod
    def _key_paths(cls, value: Any, info: ValidationInfo) -> Any:
        # Defaults follow the directory above them, read once here: a copy of the settings
        # that moves `data_dir` must pass `keys_dir` and `evidence_key` along.
        if value is not None and str(value).strip():
            return Path(value).expanduser().resolve()
        if info.field_name == "keys_dir" and "data_dir" in info.data:
            return info.data["data_dir"] / "keys"
        if info.field_name == "evidence_key" and "keys_dir" in info.data:
            return info.data["keys_dir"] / f"{WORKER}.key"
        return value  # the directory above is invalid and already reported

    @property
    def passphrase(self) -> bytes | None:
        """The key passphrase as the key files take it (never logged, never in a payload)."""
        return self.key_passphrase.get_secret_value().encode() if self.key_passphrase else None

    @field_validator("key_passphrase", mode="before")
    @classmethod
    def _no_empty_passphrase(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("catalog", mode="after")
    @classmethod
    def _absolute_catalog(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cmdb_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        return value

    @field_validator("webhook_url", "otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def cmdb(self) -> str:
        """The CMDB URL to use: the configured one or SQLite under the data dir."""
        return self.cmdb_url or f"sqlite:///{self.data_dir / 'cmdb.sqlite'}"

    @property
    def catalog_source(self) -> str:
        """How the catalog was chosen, for the worker's start-up line and error messages."""
        if "catalog" in self.model_fields_set:
            return "RELMAN_CATALOG"
        if self.catalog == EXAMPLE_CATALOG:
            return "the checkout's example (RELMAN_CATALOG unset, no ./catalog.yaml)"
        return "./catalog.yaml (RELMAN_CATALOG unset)"

    @property
    def data_dir_source(self) -> str:
        if "data_dir" in self.model_fields_set:
            return "RELMAN_DATA_DIR"
        return "./.relman (RELMAN_DATA_DIR unset)"

    @property
    def new_sqlite_cmdb(self) -> Path | None:
        """The SQLite file the CMDB would be created in (none there yet), else None."""
        if self.cmdb_url is not None:
            return None
        path = self.data_dir / "cmdb.sqlite"
        return None if path.exists() else path

    def require_catalog(self) -> Path:
        """The catalog path, or a ConfigError naming RELMAN_CATALOG when it is missing."""
        if not self.catalog.is_file():
            if "catalog" in self.model_fields_set:
                raise ConfigError(f"RELMAN_CATALOG: {self.catalog} does not exist")
            raise ConfigError(
                f"RELMAN_CATALOG: not set, and there is no {self.catalog}; "
                "set it to your service catalog file"
            )
        return self.catalog


def load_settings(**overrides: Any) -> Settings:
    """Read Settings from the environment; a bad value raises ConfigError naming it."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "RELMAN_" + "_".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {msg}{shown}") from None


def temporal_connect_config(target_host: str | None = None) -> dict[str, Any]:
    """Client.connect keyword arguments from temporal.toml / TEMPORAL_* variables."""
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except Exception as exc:  # the bridge raises its own ConfigError type
        raise ConfigError(f"Temporal client configuration: {exc}") from None
    if target_host:
        config["target_host"] = target_host
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    config.setdefault("namespace", "default")
    return config


async def connect(
    target_host: str | None = None,
    *,
    interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None,
) -> Client:
    """Connect to Temporal as configured, always with the pydantic data converter."""
    config = temporal_connect_config(target_host)
    try:
        return await Client.connect(
            **config,
            data_converter=pydantic_data_converter,
            interceptors=interceptors,
            runtime=runtime,
        )
    except RuntimeError as exc:
        text = str(exc)
        why = "connection refused" if "refused" in text.lower() else text.splitlines()[0][:200]
        raise RelmanError(
            f"cannot reach Temporal at {config['target_host']} (namespace {config['namespace']}): {why}"
        ) from None
