"""Queues and tasks of a tenant over the REST API (through Envoy), with waits for a task's
status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.simulated_phones import ANSWERING_NUMBER, OTHER_ANSWERING_NUMBER
from tests.support.waiting import WAIT_SECONDS, wait_for


@dataclass(frozen=True)
class Queue:
    api: httpx.Client
    tenant: str
    id: int

    @property
    def path(self) -> str:
        return f"/client/{self.tenant}/task_scheduler/{self.id}"

    def add(self, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.api.post(f"{self.path}/tasks/", json={"tasks": list(tasks)})
        assert response.status_code == 200, response.text
        created: list[dict[str, Any]] = response.json()
        assert len(created) == len(tasks)
        return created

    def add_one(self, **fields: Any) -> dict[str, Any]:
        task = {"a_number": ANSWERING_NUMBER, "b_number": OTHER_ANSWERING_NUMBER} | fields
        return self.add(task)[0]

    def task(self, task_id: int) -> dict[str, Any] | None:
        """The task as GET returns it, or None once it is gone (404)."""
        response = self.api.get(f"{self.path}/task/{task_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def must_task(self, task_id: int) -> dict[str, Any]:
        task = self.task(task_id)
        assert task is not None, f"task {task_id} is gone"
        return task

    def tasks(self) -> list[dict[str, Any]]:
        response = self.api.get(f"{self.path}/task/")
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body

    def set(self, **changes: Any) -> dict[str, Any]:
        response = self.api.put(self.path, json=changes)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def delete(self) -> None:
        response = self.api.delete(self.path)
        assert response.status_code in (200, 204), response.text

    def delete_task(self, task_id: int) -> None:
        response = self.api.delete(f"{self.path}/task/{task_id}")
        assert response.status_code in (200, 204), response.text

    def wait_task(
        self, task_id: int, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            task = self.must_task(task_id)
            return task if condition(task) else None

        return wait_for(check, timeout, f"task {task_id}: {what}")

    def wait_status(
        self, task_id: int, status: str, timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        return self.wait_task(task_id, lambda t: t["status"] == status, timeout, status)

    def wait_finished(self, task_id: int, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        return self.wait_status(task_id, "finished", timeout)

    def wait_all_finished(self, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            tasks = self.tasks()
            return tasks if all(t["status"] == "finished" for t in tasks) else None

        return wait_for(check, timeout, f"every task of queue {self.id} to finish")


def create_queue(api: httpx.Client, tenant: str, *, status: str = "on", limit: int = 1) -> Queue:
    response = api.post(
        f"/client/{tenant}/task_scheduler/",
        json={"name": "dispatch", "status": status, "concurrent_task_limit": limit},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status and body["concurrent_task_limit"] == limit, body
    return Queue(api, tenant, int(body["id"]))
