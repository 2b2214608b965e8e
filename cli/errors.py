"""What a command can fail with, and the exit code each one means.

Exit codes: 0 ok; 1 the API refused (or a watched task did not complete); 2 usage or timeout
(click's own usage errors exit 2 as well); 3 the server cannot be reached.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """An error to print (on stderr, without a traceback) before exiting with `exit_code`."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """The server answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str,
        url: str,
        retry_after: float | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body  # the answer's JSON, for a command that shows more of it (a 409's lists)
        self.method = method
        self.url = url
        # Seconds from the answer's Retry-After (a 429 to a long poll), for callers that try again.
        self.retry_after = retry_after


class Unreachable(CliError):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""

    exit_code = EXIT_UNREACHABLE


class UsageProblem(CliError):
    """A bad URL or argument noticed after click's own checks."""

    exit_code = EXIT_USAGE


class WatchTimeout(CliError):
    exit_code = EXIT_USAGE
