"""The command line's import without a server: CSV rows as tasks, which rows a refused bulk
add sends again, and keys that stay the same from one run to the next (a resume)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.api import RestApi
from services.cli.importer import import_csv
from services.cli.rows import CsvError, idempotency_key, read_rows, row_task


def test_a_row_becomes_the_apis_task_object() -> None:
    row = row_task(
        2,
        {
            "name": " lead ",
            "a_number": "+1555",
            "b_number": "101",
            "try_count": "3",
            "try_again_pause": "60",
            "extension_id": "",
            "caller_id_name": "Sales",
            "extended_a_numbers": "+1 +2;+3",
        },
    )
    assert row.problems == ()
    assert row.task == {
        "name": "lead",
        "a_number": "+1555",
        "b_number": "101",
        "try_count": 3,
        "try_again_pause": "60",
        "callback_params": {"caller_id_name": "Sales", "extended_a_numbers": ["+1", "+2", "+3"]},
    }


def test_the_newest_revisions_columns_become_task_fields() -> None:
    (row,) = read_rows(
        "a_number,b_number,try_count_caller,try_again_pause_caller,timezone,caller_id_name\n"
        "+1555,101,2,600,Europe/Berlin,Sales\n"
    )
    assert row.problems == ()
    assert row.task == {
        "a_number": "+1555",
        "b_number": "101",
        "try_count_caller": 2,
        "try_again_pause_caller": 600,  # a JSON number: the API refuses a string here
        "callback_params": {"caller_id_name": "Sales", "timezone": "Europe/Berlin"},
    }


def test_empty_new_cells_leave_the_fields_out_and_old_files_read_as_before() -> None:
    (row,) = read_rows(
        "a_number,b_number,try_count_caller,try_again_pause_caller,timezone\n1,2,,,\n"
    )
    assert row.task == {"a_number": "1", "b_number": "2"}
    (old,) = read_rows("name,a_number,b_number,try_count,try_again_pause\nx,1,2,3,60\n")
    assert old.task == {
        "name": "x",
        "a_number": "1",
        "b_number": "2",
        "try_count": 3,
        "try_again_pause": "60",
    }


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("try_count_caller", "two"),
        ("try_count_caller", "1.5"),
        ("try_again_pause_caller", "10m"),
        ("try_again_pause_caller", "1_000"),  # int() would take it; the console does not
        ("try_count", "٣"),  # a digit, but not an ASCII one
    ],
)
def test_a_cell_that_is_not_a_whole_number_is_that_rows_problem(column: str, cell: str) -> None:
    good, bad = read_rows(f"a_number,b_number,{column}\n1,2,3\n1,2,{cell}\n")
    assert good.problems == () and good.task[column] == 3
    assert bad.number == 3  # as a spreadsheet numbers it: the header is row 1
    assert bad.problems == (f"{column}: must be a whole number, got {cell!r}",)


def test_unknown_columns_stop_the_import_before_anything_is_sent() -> None:
    with pytest.raises(CsvError, match="unknown column"):
        read_rows("a_number,b_numbr\n1,2\n")


def test_keys_depend_on_the_import_batch_and_rows_only() -> None:
    rows = read_rows("a_number,b_number\n1,2\n3,4\n")
    assert idempotency_key("f-r", 7, 0, rows) == idempotency_key("f-r", 7, 0, list(rows))
    assert idempotency_key("f-r", 7, 0, rows) != idempotency_key("f-r", 7, 0, rows[1:])
    assert idempotency_key("f-r", 7, 0, rows) != idempotency_key("f-r", 8, 0, rows)
    assert len(idempotency_key("f" * 24 + "-abcd1234", 4294967295, 10**6, rows)) <= 255


class FakeApi:
    """Refuses tasks whose a_number is "bad" or whose callback_params.timezone is
    "Mars/Olympus" (naming them, as the API does), answers 413
    above `max_tasks`, and remembers keys as the API does (a replay creates nothing)."""

    def __init__(self, max_tasks: int = 1000) -> None:
        self.max_tasks = max_tasks
        self.keys: dict[str, list[dict[str, Any]]] = {}
        self.created: list[dict[str, Any]] = []
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["idempotency-key"]
        self.requests.append(key)
        tasks = json.loads(request.content)["tasks"]
        if key in self.keys:
            return httpx.Response(200, json=self.keys[key])
        if len(tasks) > self.max_tasks:
            return httpx.Response(413, json={"code": 3, "message": "too large", "details": []})
        bad = [i for i, t in enumerate(tasks) if t["a_number"] == "bad"]
        zones = [
            i
            for i, t in enumerate(tasks)
            if t.get("callback_params", {}).get("timezone") == "Mars/Olympus"
        ]
        if bad or zones:
            violations = [{"field": f"tasks[{i}].a_number", "description": "nope"} for i in bad]
            violations += [
                {"field": f"tasks[{i}].callback_params.timezone", "description": "no such zone"}
                for i in zones
            ]
            details = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_INPUT"},
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "field_violations": violations,
                },
            ]
            return httpx.Response(400, json={"code": 3, "message": "bad", "details": details})
        answer = [{"id": len(self.created) + i + 1, **t} for i, t in enumerate(tasks)]
        self.created += answer
        self.keys[key] = answer
        return httpx.Response(200, json=answer)


def test_rows_the_api_names_are_set_aside_and_the_rest_added(tmp_path: Path) -> None:
    fake = FakeApi(max_tasks=3)
    leads = tmp_path / "leads.csv"
    leads.write_text("a_number,b_number\n1,2\nbad,2\n3,2\n4,2\nbad,2\n6,2\n7,2\n")
    with RestApi("http://api", "t", transport=httpx.MockTransport(fake.handle)) as api:
        result = import_csv(api, leads, 5, batch_size=7)
    assert [t["a_number"] for t in fake.created] == ["1", "3", "4", "6", "7"]
    assert [(r.row, r.reasons) for r in result.rejected] == [
        (3, ("a_number: nope",)),
        (6, ("a_number: nope",)),
    ]
    assert result.created == 5

    # A second run of the same file: every batch is recorded as done, nothing is sent.
    sent = len(fake.requests)
    with RestApi("http://api", "t", transport=httpx.MockTransport(fake.handle)) as api:
        again = import_csv(api, leads, 5, batch_size=7)
    assert len(fake.requests) == sent
    assert (again.created, again.batches_sent, again.batches_resumed) == (5, 0, 1)


def test_a_batch_sent_again_after_an_interruption_is_replayed(tmp_path: Path) -> None:
    fake = FakeApi()
    leads = tmp_path / "leads.csv"
    leads.write_text("a_number,b_number\n" + "".join(f"{i},2\n" for i in range(10)))
    with RestApi("http://api", "t", transport=httpx.MockTransport(fake.handle)) as api:
        import_csv(api, leads, 5, batch_size=4)
    state_path = tmp_path / "leads.csv.q5.import-state.json"
    state = json.loads(state_path.read_text())
    del state["done"]["1"]  # committed by the API, its answer lost before the state was saved
    state_path.write_text(json.dumps(state))
    with RestApi("http://api", "t", transport=httpx.MockTransport(fake.handle)) as api:
        resumed = import_csv(api, leads, 5, batch_size=4)
    assert len(fake.created) == 10  # the batch was answered from its key: nothing doubled
    assert resumed.created == 10
    assert fake.requests[-1] == fake.requests[1]


def test_a_refused_timezone_is_reported_with_its_row_and_the_apis_words(tmp_path: Path) -> None:
    fake = FakeApi()
    leads = tmp_path / "zones.csv"
    leads.write_text(
        "a_number,b_number,timezone,try_count_caller\n"
        "1,2,Europe/Berlin,2\n"
        "3,2,Mars/Olympus,\n"
        "4,2,,x\n"
    )
    with RestApi("http://api", "t", transport=httpx.MockTransport(fake.handle)) as api:
        result = import_csv(api, leads, 5)
    assert [t["a_number"] for t in fake.created] == ["1"]
    assert fake.created[0]["callback_params"] == {"timezone": "Europe/Berlin"}
    assert [(r.row, r.reasons) for r in result.rejected] == [
        (3, ("callback_params.timezone: no such zone",)),
        (4, ("try_count_caller: must be a whole number, got 'x'",)),
    ]
