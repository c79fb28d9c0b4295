from __future__ import annotations

import httpx


def test_create_and_list_queue(api: httpx.Client, tenant: str) -> None:
    created = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "q"})
    assert created.status_code == 200, created.text
    listed = api.get(f"/client/{tenant}/task_scheduler/")
    assert listed.json() == [created.json()]
