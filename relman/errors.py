"""The one error type the CLI and the Python API raise for problems a user can fix."""

from __future__ import annotations


class RelmanError(Exception):
    """A refusal or a failure with a one-line message meant for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message.strip().splitlines()[0] if message.strip() else "error")

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(RelmanError):
    """A configuration value is invalid; the message names the setting."""


class NotFoundError(RelmanError):
    """No release (or CMDB item) has that name."""


class RefusedError(RelmanError):
    """The workflow refused the request (validator, duplicate start, closed gate)."""
