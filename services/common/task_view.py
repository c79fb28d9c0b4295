"""A task row as the published API shows it: used by the api and in webhook events."""

from __future__ import annotations

from typing import Any

from scheduler.v1 import scheduler_pb2 as pb

from services.common.timefmt import format_utc


def task_to_proto(row: Any) -> pb.Task:
    """Any object with the columns of `tasks` (a Row or a mapping wrapper) -> Task."""
    params = row.callback_params or {}
    return pb.Task(
        id=row.id,
        name=row.name,
        status=row.status,
        a_number=row.a_number,
        b_number=row.b_number,
        extension_id=row.extension_id,
        scheduler_id=row.queue_id,
        finish_result=row.finish_result,
        cdr=row.cdr,
        try_count=row.try_count,
        try_again_pause=str(row.try_again_pause),
        start_time_utc=format_utc(row.start_time_utc),
        url_before=row.url_before,
        url_before_again=row.url_before_again,
        url_after=row.url_after,
        url_success=row.url_success,
        create_date_utc=format_utc(row.create_date_utc),
        finish_comment=row.finish_comment,
        callback_params=pb.CallbackParams(
            caller_id_name=params.get("caller_id_name", ""),
            caller_id_number=params.get("caller_id_number", ""),
            extended_a_numbers=params.get("extended_a_numbers", []),
            call_duration=params.get("call_duration", 0),
            ring_timeout=params.get("ring_timeout", 0),
            timezone=params.get("timezone", ""),
        ),
        try_count_caller=row.try_count_caller,
        try_again_pause_caller=row.try_again_pause_caller,
    )
