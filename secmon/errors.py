"""One root exception for everything a user can get wrong, and the exit codes.

Library code raises these; only `secmon.cli` turns them into a message and an
exit code. Each error can carry where it happened (file, line, column) and a
hint saying what is allowed, so that the message alone is enough to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of the `secmon` command (README, "Exit codes")."""

    OK = 0
    INTERNAL = 1  # a bug in secmon: the traceback is printed
    USAGE = 2  # bad flag or argument (click uses 2 as well)
    CONFIG = 3  # secmon.yml is wrong
    INPUT = 4  # a rule, pipeline or input file is wrong
    ELASTICSEARCH = 5  # Elasticsearch unreachable or refused a request
    DELIVERY = 6  # some alerts could not be sent now; they stay queued
    UNHEALTHY = 7  # `status`: no active scheduler, scans behind, failed alerts or failing rules
    FINDINGS = 10  # only with --fail-on-findings: the scan found incidents


@dataclass(frozen=True)
class Location:
    path: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        parts = [self.path]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: what, where, and what is allowed."""

    message: str
    location: Location | None = None
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return f"{text} ({self.hint})" if self.hint else text


class SecmonError(Exception):
    """Root of every expected failure. Never raised for bugs.

    A file with several problems raises one error carrying all of them (`problems`),
    so a user fixes the file in one pass instead of one error per run.
    """

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None,
                 problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint
        self.problems = problems

    def __str__(self) -> str:
        head = str(Problem(self.message, self.location, self.hint))
        return "\n".join([head, *(f"  {problem}" for problem in self.problems)])


class ConfigError(SecmonError):
    exit_code = ExitCode.CONFIG


class InputError(SecmonError):
    """A rule, pipeline, or input file is malformed."""

    exit_code = ExitCode.INPUT


class StoreUnavailable(SecmonError):
    """Elasticsearch could not be reached or refused what we asked."""

    exit_code = ExitCode.ELASTICSEARCH


class RequestRefused(StoreUnavailable):
    """Elasticsearch refused a request for what it holds (400, 413): sending it again as it is cannot help."""


class DeliveryError(SecmonError):
    exit_code = ExitCode.DELIVERY


class KibanaUnavailable(SecmonError):
    """Kibana could not be reached or refused what we asked (the same exit code as Elasticsearch: the stack)."""

    exit_code = ExitCode.ELASTICSEARCH


class LeaseLost(SecmonError):
    """This scheduler is no longer the active one (its lease expired or a newer holder exists): commit nothing."""

    exit_code = ExitCode.UNHEALTHY
