"""`callbacks watch QUEUE`: a queue's numbers, polled from the API.

Each sample pages through the queue's tasks (1,000 per request) and counts them by status:
due and scheduled later are told apart by start time, which no counter and no status filter
gives, so one pass over all pages counts every status at once (a request per status would
read the queue's tasks again for each). Finished per minute is the growth of the finished
count over the samples of the last minute.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from services.cli.api import RestApi

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Sample:
    """One look at a queue: its settings and its tasks by status at `taken` (monotonic s)."""

    taken: float
    name: str
    status: str
    limit: int
    in_flight: int  # executed: an attempt in progress
    due: int  # scheduled with a start time in the past: about to start, or the queue is off
    later: int  # scheduled for later
    held_by_limit: int  # delayed_concurrent_task: due, no room under the limit or a quota
    held_by_window: int  # delayed_interval: due, outside the queue's calling window
    delayed: int  # waiting out try_again_pause (or try_again_pause_caller) before a retry
    finished: int
    failed: int


def sample(api: RestApi, queue_id: int, taken: float, now: datetime | None = None) -> Sample:
    """Count the queue's tasks (one pass over all its pages)."""
    now_text = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    queue = api.queue(queue_id)
    counts = dict.fromkeys(
        ("executed", "due", "later", "limit", "window", "delayed", "finished", "failed"), 0
    )
    for task in api.tasks(queue_id):
        status = task["status"]
        if status == "scheduled":
            counts["due" if task["start_time_utc"] <= now_text else "later"] += 1
        elif status == "delayed_concurrent_task":
            counts["limit"] += 1
        elif status == "delayed_interval":
            counts["window"] += 1
        elif status == "finished":
            counts["finished"] += 1
            counts["failed"] += task.get("finish_result") == "failed"
        elif status.startswith("delayed"):
            counts["delayed"] += 1
        else:
            counts["executed"] += 1
    return Sample(
        taken=taken,
        name=str(queue.get("name", "")),
        status=str(queue["status"]),
        limit=int(queue["concurrent_task_limit"]),
        in_flight=counts["executed"],
        due=counts["due"],
        later=counts["later"],
        held_by_limit=counts["limit"],
        held_by_window=counts["window"],
        delayed=counts["delayed"],
        finished=counts["finished"],
        failed=counts["failed"],
    )


class Rate:
    """Finished tasks per minute over the samples of the last WINDOW_SECONDS."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()

    def add(self, latest: Sample) -> float | None:
        """Record a sample; the rate per minute (None until two samples are apart)."""
        self._samples.append(latest)
        while latest.taken - self._samples[0].taken > WINDOW_SECONDS:
            self._samples.popleft()
        oldest = self._samples[0]
        elapsed = latest.taken - oldest.taken
        if elapsed <= 0:
            return None
        return max(0, latest.finished - oldest.finished) * 60.0 / elapsed
