"""One error root for the whole system; edges translate it (gRPC status, NATS ack)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, e.g. field="tasks[3].a_number"."""

    field: str
    description: str


class SchedulerError(Exception):
    """Root of every error the services raise on purpose."""

    reason = "ERROR"
    # An HTTP status the REST gateway should answer instead of the one it derives from the
    # gRPC code (no gRPC code maps to 422): sent as the `x-http-status` trailer, which the
    # gateway's Lua filter applies and removes.
    http_status: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SchedulerError):
    reason = "INVALID_INPUT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"invalid request: {summary}{more}")


class NotFound(SchedulerError):
    reason = "NOT_FOUND"


class Unauthenticated(SchedulerError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(SchedulerError):
    reason = "PERMISSION_DENIED"


class Conflict(SchedulerError):
    reason = "CONFLICT"


class Unprocessable(SchedulerError):
    """Well-formed, but not acceptable in the state things are in (HTTP 422)."""

    reason = "UNPROCESSABLE"
    http_status = 422


class StorageUnavailable(SchedulerError):
    """PostgreSQL cannot be reached; the caller may retry."""

    reason = "STORAGE_UNAVAILABLE"


class PolicyViolation(InvalidInput):
    """Well-formed input the tenant is not allowed to send (an extension, caller id or
    destination it does not own): a 400 with a reason of its own."""

    def __init__(self, reason: str, violations: list[FieldViolation]) -> None:
        super().__init__(violations)
        self.reason = reason


class QuotaExceeded(SchedulerError):
    """A tenant's quota would be exceeded (429)."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, quota: str, message: str) -> None:
        super().__init__(message)
        self.quota = quota
