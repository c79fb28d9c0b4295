"""The REST API as the command line uses it: paths of the published contract, paging,
Idempotency-Key, and the API's errors (google.rpc.Status) read into ApiError."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

PAGE_SIZE = 1000  # the API's largest page
# Answers worth the same request again (with the same Idempotency-Key, so never doubled):
# the rate limit, a dependency down, a gateway timeout.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Violation:
    """One bad field, as the API names it (`tasks[3].a_number`) and says why."""

    field: str
    description: str


class ApiError(Exception):
    """An error answer of the API: HTTP status, ErrorInfo reason, message, bad fields."""

    def __init__(
        self, status: int, reason: str, message: str, violations: Sequence[Violation] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.violations = tuple(violations)

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """Read the error body (the google.rpc.Status JSON shape of every error)."""
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, "", response.text.strip()[:500])
        if not isinstance(body, dict):
            return cls(response.status_code, "", str(body)[:500])
        reason, violations = "", []
        for detail in body.get("details") or []:
            kind = str(detail.get("@type", ""))
            if kind.endswith("ErrorInfo"):
                reason = str(detail.get("reason", ""))
            elif kind.endswith("BadRequest"):
                violations = [
                    Violation(str(v.get("field", "")), str(v.get("description", "")))
                    for v in detail.get("field_violations") or []
                ]
        return cls(response.status_code, reason, str(body.get("message", "")), violations)


class RestApi:
    """One client's view of the API (`client` is its id, or `@me`: the token's own)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: str = "@me",
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            transport=transport,
        )
        self._root = f"/client/{quote(client, safe='@')}"
        self._retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send, retrying what RETRY_STATUSES and lost connections allow; the JSON answer."""
        delay = 0.5
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(
                    method, self._root + path, params=params, json=body, headers=headers
                )
            except httpx.TransportError:
                # Only requests that are safe to repeat: reads, and POSTs with a key.
                if attempt == self._retries or (method == "POST" and not headers):
                    raise
            else:
                if response.status_code < 400:
                    return response.json()
                error = ApiError.of(response)
                # A quota 429 (QUOTA_EXCEEDED) stays one however often it is asked.
                if (
                    response.status_code not in RETRY_STATUSES
                    or error.reason == "QUOTA_EXCEEDED"
                    or attempt == self._retries
                ):
                    raise error
                delay = max(delay, float(response.headers.get("retry-after", "0") or 0))
            time.sleep(delay)
            delay = min(delay * 2, 10)
        raise AssertionError("unreachable")

    def queues(self) -> list[dict[str, Any]]:
        """Every queue of the client, all pages."""
        return list(self._pages("/task_scheduler/", {}))

    def queue(self, queue_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/task_scheduler/{queue_id}")
        return result

    def tasks(self, queue_id: int, *, status: str = "") -> Iterator[dict[str, Any]]:
        """A queue's tasks in id order, page by page (optionally of one status)."""
        params: dict[str, str | int] = {"status": status} if status else {}
        return self._pages(f"/task_scheduler/{queue_id}/task/", params)

    def count_tasks(self, queue_id: int, status: str) -> int:
        return sum(1 for _ in self.tasks(queue_id, status=status))

    def add_tasks(
        self, queue_id: int, tasks: Sequence[Mapping[str, Any]], idempotency_key: str
    ) -> list[dict[str, Any]]:
        """One bulk add (1..1000 tasks, all or nothing), safe to repeat with the same key."""
        created: list[dict[str, Any]] = self._request(
            "POST",
            f"/task_scheduler/{queue_id}/tasks/",
            body={"tasks": list(tasks)},
            headers={"Idempotency-Key": idempotency_key},
        )
        return created

    def task_calls(self, queue_id: int, task_id: int) -> list[dict[str, Any]]:
        """The call records of a task's attempts, newest first."""
        calls: list[dict[str, Any]] = self._request(
            "GET", f"/task_scheduler/{queue_id}/task/{task_id}/calls"
        )
        return calls

    def _pages(self, path: str, params: dict[str, str | int]) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            page: list[dict[str, Any]] = self._request(
                "GET", path, params={**params, "limit": PAGE_SIZE, "after_id": after}
            )
            yield from page
            if len(page) < PAGE_SIZE:
                return
            after = int(page[-1]["id"])
