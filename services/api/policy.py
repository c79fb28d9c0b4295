"""What a tenant may ask for, beyond well-formed input: its own SIP accounts, its own caller
ids, and numbers its destination rules allow (free of grpc and SQL: the servicer reads the
tenant's policy and passes it in)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.api.validation import NewTask
from services.common.errors import FieldViolation, PolicyViolation
from services.common.tenancy import DestinationRule, destination_allowed

# Extension 0 is the operator's default account: every tenant may use it.
DEFAULT_EXTENSION = 0

EXTENSION_NOT_OWNED = "EXTENSION_NOT_OWNED"
CALLER_ID_NOT_ALLOWED = "CALLER_ID_NOT_ALLOWED"
DESTINATION_DENIED = "DESTINATION_DENIED"


@dataclass(frozen=True)
class TenantPolicy:
    """The operator's settings for one tenant that bear on new tasks."""

    extensions: frozenset[int]  # extension ids with an account of the tenant's own
    caller_ids: frozenset[str]  # the numbers it owns (of those asked about)
    rules: tuple[DestinationRule, ...]


def _numbers(task: NewTask) -> Iterable[tuple[str, str]]:
    yield "a_number", task.a_number
    yield "b_number", task.b_number
    for index, number in enumerate(task.callback_params.extended_a_numbers):
        yield f"callback_params.extended_a_numbers[{index}]", number


def check_new_tasks(
    tasks: Sequence[NewTask], policy: TenantPolicy, default_denied: Iterable[str]
) -> None:
    """Raise PolicyViolation (every offending field of the first kind found) for a task on
    an extension, caller id or destination the tenant does not own or may not call."""
    _check([(f"tasks[{index}].", task) for index, task in enumerate(tasks)], policy, default_denied)


def check_task(task: NewTask, policy: TenantPolicy, default_denied: Iterable[str]) -> None:
    """check_new_tasks for one task (a reschedule), its fields named without an index."""
    _check([("", task)], policy, default_denied)


def _check(
    tasks: Sequence[tuple[str, NewTask]], policy: TenantPolicy, default_denied: Iterable[str]
) -> None:
    denied = tuple(default_denied)
    extensions, caller_ids, destinations = [], [], []
    for at, task in tasks:
        if task.extension_id != DEFAULT_EXTENSION and task.extension_id not in policy.extensions:
            extensions.append(
                FieldViolation(
                    f"{at}extension_id",
                    f"extension {task.extension_id} is not a SIP account of this client "
                    "(the operator assigns them)",
                )
            )
        caller_id = task.callback_params.caller_id_number
        if caller_id and caller_id not in policy.caller_ids:
            caller_ids.append(
                FieldViolation(
                    f"{at}callback_params.caller_id_number",
                    f"{caller_id} is not a caller id of this client "
                    "(the operator registers the numbers a client owns)",
                )
            )
        for field, number in _numbers(task):
            if not destination_allowed(number, policy.rules, denied):
                destinations.append(
                    FieldViolation(
                        f"{at}{field}",
                        f"calls to {number} are not allowed for this client "
                        "(destination rules; the operator can allow a prefix)",
                    )
                )
    for reason, violations in (
        (EXTENSION_NOT_OWNED, extensions),
        (CALLER_ID_NOT_ALLOWED, caller_ids),
        (DESTINATION_DENIED, destinations),
    ):
        if violations:
            raise PolicyViolation(reason, violations)


def caller_ids_of(tasks: Sequence[NewTask]) -> set[str]:
    """The caller ids a bulk add asks for (the policy is read for those only)."""
    return {t.callback_params.caller_id_number for t in tasks if t.callback_params.caller_id_number}
