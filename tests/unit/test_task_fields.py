"""The api's fast reading of a TaskInput gives exactly what MessageToDict gives."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from scheduler.v1 import scheduler_pb2 as pb

from services.api.servicer import _fields, _task_fields


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {"a_number": "+15550001", "b_number": "101"},
        {"name": "", "try_count": 0, "extension_id": 5, "url_before": ""},
        {"try_again_pause": "60"},
        {"try_again_pause": 60},
        {"try_again_pause": None},
        {"try_again_pause": [1, "x"]},
        {"try_again_pause": {"seconds": 1}},
        {"callback_params": {}},
        {"callback_params": {"extended_a_numbers": ["+1", "+2"], "caller_id_name": "Shop"}},
        {"url_after": "https://example.com/a", "start_time_utc": "2026-01-01 00:00"},
        {"try_count_caller": 0, "try_again_pause_caller": 0},  # sent as 0: still sent
        {"try_count_caller": 3, "try_again_pause_caller": 864000},
    ],
)
def test_same_fields_as_message_to_dict(sent: dict[str, Any]) -> None:
    task = json_format.ParseDict(sent, pb.TaskInput())

    fast, generic = _task_fields(task), _fields(task)

    assert fast == generic
    assert {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in generic.items()}
