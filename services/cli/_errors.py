"""What ends a user command: a message for the user (what went wrong and what to do)
and the exit code."""

from __future__ import annotations

from events import ClinaiError

__all__ = ["ApiProblem", "ApiUnreachable", "CliError"]


class CliError(ClinaiError):
    """Printed as `clinai <command>: <message>`; the command exits with `code`."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ApiProblem(CliError):
    """The API refused a request: its status and the problem document's `detail`."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail or title or f"HTTP {status}")
        self.status = status
        self.title = title
        self.detail = detail


class ApiUnreachable(CliError):
    """No connection to the API (it is down, or the address is wrong)."""
