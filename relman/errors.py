"""The one error type the CLI and the Python API raise for problems a user can fix.

This module imports nothing of relman (the contracts raise `ContractError` from here).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


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


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: message` (a rule over several fields: the message)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


class ContractError(ValidationError, RelmanError):
    """A contract constructed with bad values (`ReleaseRequest(version="latest")`).

    Its message is one line naming the model and the first bad field. It stays a pydantic
    `ValidationError` (so a `ValueError`): code that catches those, pydantic validators that
    construct a contract, and a workflow's `failure_exception_types` still treat it as one,
    and `errors()` lists every problem.
    """

    @classmethod
    def of(cls, exc: ValidationError) -> ContractError:
        """The same errors as `exc`, as a ContractError."""
        details: list[InitErrorDetails] = []
        for err in exc.errors(include_url=False):
            detail: dict[str, Any] = {"type": err["type"], "loc": err["loc"], "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            try:  # a built-in error type rebuilds as itself; a custom one as its message
                ValidationError.from_exception_data(exc.title, [detail])  # type: ignore[list-item]
            except (KeyError, TypeError, ValueError):
                detail = {
                    "type": PydanticCustomError(err["type"], "{message}", {"message": err["msg"]}),
                    "loc": err["loc"],
                    "input": err["input"],
                }
            details.append(detail)  # type: ignore[arg-type]
        return cls.from_exception_data(exc.title, details)

    def __str__(self) -> str:
        more = self.error_count() - 1
        return f"invalid {self.title}: {one_line(self)}" + (f" (and {more} more)" if more > 0 else "")

    @property
    def message(self) -> str:
        return str(self)
