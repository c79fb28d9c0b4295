"""The SIP run of `make chaos`: the dialers place real SIP calls, sipp processes play the
phones, and the phones' own message traces are the witnesses.

Phones (one sipp process per loopback address, each taking any number of calls; see
tests/sip/phones.py `patient_scenario`, every wait bounded so that a call whose controller
was killed ends at the phone by itself):

| numbers | address   | phone                                                             |
|---------|-----------|-------------------------------------------------------------------|
| +15550… | 127.0.0.2 | A: rings 0.1 s, answers, takes the re-INVITE, hung up by us       |
| +15551… | 127.0.0.4 | A, busy (486 at once)                                             |
| +15552… | 127.0.0.5 | A, no answer (rings until our CANCEL at the 2 s ring timeout)     |
| +15557… | 127.0.0.7 | extended A number: rings 0.4 s, answers (CANCELled if A was first) |
| +16660… | 127.0.0.3 | B: rings 0.1 s, answers, talks 0.3 s and hangs up                 |
| +16661… | 127.0.0.6 | B, busy                                                           |

Each leg's Call-ID is `<call_uuid>-<leg>-<random>@host` (services/dialer/sip/leg.py); the
`calls` table, read as another client, maps call_uuid to (task, attempt, queue). The checks
read only the phones' traces (`sipp -trace_msg`: every message each phone received or sent,
with its time), the webhook receiver's log and the database:

1. no (task, attempt, leg) INVITEd twice: distinct initial INVITE transactions (Call-ID,
   top Via branch, CSeq) at the phones, retransmissions of one transaction counted once;
2. every try a finished task spent rang a phone: `tasks.attempts` <= distinct attempts the
   phones received an INVITE for;
3. no task got more tries than its try_count: in the database and at the phones;
4. no queue above its concurrent_task_limit, from each call's interval at the phones: its
   first INVITE received to the end of its last leg (the first BYE sent or received, else
   the final non-2xx response sent, else the leg's last message);
5. webhooks in order per task (the receiver's log; bench/chaos.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any, NamedTuple

from services.dialer.sip.transaction import T1
from tests.sip.phones import (
    PATIENT_ARGS,
    ChaosBehaviour,
    Phone,
    free_phone_port,
    patient_scenario,
    start_phone,
)
from tests.support.calls import max_overlap

# The dialers' timings: a no-answer phone rings until RING_TIMEOUT; B hangs up long before
# MAX_CALL. With 2 cores shared, the dialers may read a 200 OK a second late: a shorter ring
# timeout CANCELs phones that did answer.
RING_TIMEOUT = 2.0
MAX_CALL = 3.0
# A phone waits at most this long for the controller's next message, then ends the call
# itself (its own BYE, or a 480): longer than B may ring, so that A waits for B's media.
# With sipp's -T2 below, an unacknowledged 200 OK is retransmitted at 0.5, 1, 1, 1, … s.
PATIENCE_MS = 6000
T2_MS = 1000
# The lease covers the longest a call can last at a live dialer, SIP transaction timeouts
# included (the dialer's own `longest_call_seconds`, 2 x 2 + 3 = 7 s, leaves them out): each
# A and B ringing, then waiting up to 64*T1 + 1 s for a final response after its CANCEL; a
# re-INVITE and a BYE that get no answer, 64*T1 each (RFC 3261 17.1.1.2, 17.1.2.2); the
# longest talk; plus a margin for dial delays and a killed dialer's calls ending at the
# phones by themselves (PATIENCE). With a shorter lease, a call whose phone stopped
# answering outlives its attempt, and the queue's next call starts while it is still up.
LEASE = 2 * (RING_TIMEOUT + 64 * T1 + 1) + 2 * 64 * T1 + MAX_CALL + 15.0


@dataclass(frozen=True)
class PhoneSpec:
    name: str
    host: str
    behaviour: ChaosBehaviour
    prefix: str  # the numbers routed to this phone
    ring_ms: int = 100
    talk_ms: int = 300


PHONES = (
    PhoneSpec("a", "127.0.0.2", "a", "+15550"),
    PhoneSpec("a_busy", "127.0.0.4", "busy", "+15551"),
    PhoneSpec("a_no_answer", "127.0.0.5", "no_answer", "+15552"),
    PhoneSpec("a_extended", "127.0.0.7", "a", "+15557", ring_ms=400),
    PhoneSpec("b", "127.0.0.3", "b", "+16660"),
    PhoneSpec("b_busy", "127.0.0.6", "busy", "+16661"),
)
PREFIX = {spec.name: spec.prefix for spec in PHONES}
# Shares of the tasks: A answers / is busy / does not answer; B answers / is busy; a task
# with one extended A number (rung at the same time as A).
A_WEIGHTS = {"a": 80, "a_busy": 10, "a_no_answer": 10}
B_BUSY_SHARE = 0.07
EXTENDED_SHARE = 0.15


def task_of_number(number: str) -> str:
    """The name of the task a number was made for (its last six digits are the task's
    index, see task_numbers): what a phone's trace tells of a call without our records."""
    return f"chaos-{int(number[-6:])}" if number[-6:].isdigit() else "?"


def task_numbers(index: int, rng: Random) -> dict[str, Any]:
    """The numbers of task `index`: which phones its A and B numbers reach."""
    a_phone = rng.choices(list(A_WEIGHTS), weights=list(A_WEIGHTS.values()))[0]
    b_phone = "b_busy" if rng.random() < B_BUSY_SHARE else "b"
    numbers: dict[str, Any] = {
        "a_number": f"{PREFIX[a_phone]}{index:06d}",
        "b_number": f"{PREFIX[b_phone]}{index:06d}",
    }
    if rng.random() < EXTENDED_SHARE:
        numbers["callback_params"] = {"extended_a_numbers": [f"{PREFIX['a_extended']}{index:06d}"]}
    return numbers


@dataclass
class ChaosPhones:
    """The sipp phones of one run, with their traces in `folder`."""

    folder: Path
    port: int = 0
    phones: dict[str, Phone] = field(default_factory=dict)

    def start(self) -> None:
        self.port = free_phone_port(*(spec.host for spec in PHONES))
        asyncio.run(self._start())

    async def _start(self) -> None:
        for spec in PHONES:
            xml = patient_scenario(
                spec.behaviour, ring_ms=spec.ring_ms, talk_ms=spec.talk_ms, patience_ms=PATIENCE_MS
            )
            self.phones[spec.name] = await start_phone(
                spec.host,
                xml,
                calls=None,
                port=self.port,
                timeout_seconds=None,
                workdir=self.folder / spec.name,
                extra_args=(*PATIENT_ARGS, "-trace_msg", "-T2", str(T2_MS)),
            )

    def dialer_env(self) -> dict[str, str]:
        routes = [
            {"pattern": f"{spec.prefix}*", "proxy": f"{spec.host}:{self.port}"} for spec in PHONES
        ]
        return {
            "DIALER_BACKEND": "sip",
            # Each dialer (and each restart) on a port of its own, on loopback.
            "DIALER_SIP_LISTEN": "127.0.0.1:0",
            "DIALER_SIP_ROUTES": json.dumps(routes),
            "DIALER_RING_TIMEOUT_SECONDS": str(RING_TIMEOUT),
            "DIALER_MAX_CALL_SECONDS": str(MAX_CALL),
        }

    def dead(self) -> str | None:
        """A phone whose sipp exited (it should run until stopped)."""
        for name, phone in self.phones.items():
            if phone.process.poll() is not None:
                return f"phone {name} ({phone.host}) exited {phone.process.returncode}"
        return None

    def stop(self) -> None:
        for phone in self.phones.values():
            if phone.process.poll() is None:
                phone.process.terminate()  # sipp writes its last statistics and exits
                try:
                    phone.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    phone.stop()

    def traces(self) -> dict[str, list[Path]]:
        """Per phone: its message traces, and its error logs (where sipp notes the calls it
        aborted)."""
        return {
            name: sorted(phone.workdir.glob("*_messages.log"))
            + sorted(phone.workdir.glob("*_errors.log"))
            for name, phone in self.phones.items()
        }


# --- the phones' traces ---------------------------------------------------------------------


class SipEvent(NamedTuple):
    """One message a phone received ("R") or sent ("S"), as its trace shows it."""

    at: datetime
    phone: str
    direction: str
    first_line: str
    call_id: str
    cseq: int
    method: str  # of the CSeq
    branch: str  # of the top Via
    to_tag: bool

    @property
    def status(self) -> int:
        """The status code of a response, 0 for a request."""
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if self.first_line.startswith("SIP/2.0 ") else 0

    @property
    def request(self) -> str:
        return "" if self.status else self.first_line.split(" ", 1)[0]


_ENTRY = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.MULTILINE)
_HEADER = re.compile(r"^([A-Za-z-]+)\s*:\s*(.*)$")
_COMPACT = {"i": "call-id", "v": "via", "t": "to"}


def read_trace(path: Path, phone: str) -> Iterator[SipEvent]:
    """The messages of a `sipp -trace_msg` file, in order."""
    text = path.read_text(errors="replace")
    marks = list(_ENTRY.finditer(text))
    if not marks:
        return  # an empty trace (the phone saw nothing)
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : following.start() if following else len(text)]
        lines = body.strip("\n").splitlines()
        if not lines or ("received" not in lines[0] and "sent" not in lines[0]):
            continue
        direction = "R" if "received" in lines[0] else "S"
        message = [line.strip("\r") for line in lines[1:]]
        while message and not message[0].strip():
            message.pop(0)
        if not message:
            continue  # cut by the end of the file
        headers: dict[str, str] = {}
        for line in message[1:]:
            if not line.strip():
                break
            match = _HEADER.match(line)
            if match:
                name = match[1].lower()
                headers.setdefault(_COMPACT.get(name, name), match[2].strip())
        cseq = headers.get("cseq", "0 ?").split()
        via = headers.get("via", "")
        branch = re.search(r";\s*branch=([^;,\s]+)", via)
        yield SipEvent(
            at=datetime.fromisoformat(mark[1]),
            phone=phone,
            direction=direction,
            first_line=message[0].strip(),
            call_id=headers.get("call-id", ""),
            cseq=int(cseq[0]) if cseq[0].isdigit() else 0,
            method=cseq[1] if len(cseq) > 1 else "?",
            branch=branch[1] if branch else "",
            to_tag=";tag=" in headers.get("to", "").replace(" ", ""),
        )


_CALL_ID = re.compile(r"^(?P<uuid>[0-9A-Za-z-]+)-(?P<leg>a\d+|b)-[0-9a-f]+@")


@dataclass
class LegSeen:
    """What the phones saw of one leg (one Call-ID)."""

    call_id: str
    call_uuid: str
    leg: str
    phones: set[str] = field(default_factory=set)
    number: str = ""  # the user part of the INVITE's Request-URI: the number called
    # Initial INVITE transactions received (no To tag): (branch, CSeq number), first time.
    invites: dict[tuple[str, int], datetime] = field(default_factory=dict)
    invite_copies: int = 0  # INVITEs received, retransmissions included
    first: datetime | None = None
    last: datetime | None = None
    bye: datetime | None = None
    final: datetime | None = None  # a non-2xx final response to the initial INVITE
    aborted: datetime | None = None  # the phone gave the call up (sipp's error log)
    outcome: str = ""  # the phone's final response to the INVITE, e.g. "200 OK", "486 Busy Here"

    @property
    def start(self) -> datetime | None:
        return min(self.invites.values(), default=None)

    @property
    def end(self) -> datetime | None:
        """When the call ended at the phone: the first BYE, final failure or abort; else
        the last message seen."""
        ends = [at for at in (self.bye, self.final, self.aborted) if at is not None]
        return min(ends) if ends else self.last


def legs_seen(traces: dict[str, list[Path]]) -> tuple[dict[str, LegSeen], Counter[str]]:
    """Every leg the phones saw, by Call-ID; and the messages no leg could be named for."""
    legs: dict[str, LegSeen] = {}
    strays: Counter[str] = Counter()
    aborts: list[tuple[str, datetime]] = []
    for phone, paths in traces.items():
        for path in paths:
            if path.name.endswith("_errors.log"):
                aborts += read_aborts(path)
                continue
            for event in read_trace(path, phone):
                named = _CALL_ID.match(event.call_id)
                if named is None:
                    strays[f"{phone} {event.direction} {event.first_line[:40]}"] += 1
                    continue
                leg = legs.get(event.call_id)
                if leg is None:
                    leg = legs[event.call_id] = LegSeen(event.call_id, named["uuid"], named["leg"])
                leg.phones.add(phone)
                leg.first = min(leg.first or event.at, event.at)
                leg.last = max(leg.last or event.at, event.at)
                if event.direction == "R" and event.request == "INVITE" and not event.to_tag:
                    leg.invites.setdefault((event.branch, event.cseq), event.at)
                    leg.invite_copies += 1
                    called = re.match(r"INVITE sips?:([^@;>\s]+)@", event.first_line)
                    leg.number = leg.number or (called[1] if called else "")
                if event.request == "BYE" or (event.method == "BYE" and event.status):
                    leg.bye = min(leg.bye or event.at, event.at)
                initial = any(cseq == event.cseq for _, cseq in leg.invites)
                if event.direction == "S" and event.method == "INVITE" and initial:
                    if event.status >= 200 and not leg.outcome:
                        leg.outcome = event.first_line.removeprefix("SIP/2.0 ")
                    if event.status >= 300:
                        leg.final = min(leg.final or event.at, event.at)
    for call_id, at in aborts:
        if call_id in legs:
            leg = legs[call_id]
            leg.aborted = min(leg.aborted or at, at)
    return legs, strays


# sipp's error log: entries not always on lines of their own.
_ABORT = re.compile(
    r"(\d{4}-\d\d-\d\d)\t(\d\d:\d\d:\d\d\.\d+)\t[\d.]+: Aborting call[^']*Call-Id '([^']+)'"
)


def read_aborts(path: Path) -> Iterator[tuple[str, datetime]]:
    """The calls a phone aborted (an unexpected message, a retransmission timeout), when."""
    for match in _ABORT.finditer(path.read_text(errors="replace")):
        yield match[3], datetime.fromisoformat(f"{match[1]} {match[2]}")


# --- the invariants ---------------------------------------------------------------------------


class CallRow(NamedTuple):
    call_uuid: str
    task_id: int
    attempt: int
    queue_id: int


def describe(task: dict[str, Any], rows: list[CallRow], legs: dict[str, list[LegSeen]]) -> str:
    """A task as the database and the phones saw it, for a failure report."""
    comment = str(task.get("finish_comment") or "")
    parts = [
        f"task {task['id']} (try_count {task['try_count']}, attempts {task['attempts']}, "
        f"{task['finish_result']}{f': {comment[:120]}' if comment else ''}):"
    ]
    for row in sorted(rows, key=lambda r: r.attempt):
        seen = legs.get(row.call_uuid, [])
        phones = "; ".join(
            f"{leg.leg}@{'/'.join(sorted(leg.phones))} {len(leg.invites)} INVITE "
            f"{leg.start:%H:%M:%S.%f} -> {leg.outcome or 'no final response'}"
            for leg in sorted(seen, key=lambda leg: leg.call_id)
            if leg.start is not None
        )
        parts.append(
            f"attempt {row.attempt} call {row.call_uuid[:8]}: {phones or 'no INVITE at any phone'}"
        )
    return " ".join(parts)


def check_sip_invariants(
    tasks: list[dict[str, Any]],
    calls: list[CallRow],
    limits: dict[int, int],
    phones: ChaosPhones,
    say: Any,
    check: Any,
) -> None:
    """Invariants 1-4 of the module docstring; `say` and `check` print figures."""
    legs, strays = legs_seen(phones.traces())
    by_uuid: dict[str, list[LegSeen]] = defaultdict(list)
    for leg in legs.values():
        by_uuid[leg.call_uuid].append(leg)
    row_of = {row.call_uuid: row for row in calls}
    rows_of_task: dict[int, list[CallRow]] = defaultdict(list)
    for call in calls:
        rows_of_task[call.task_id].append(call)
    task_of = {int(t["id"]): t for t in tasks}
    invites = sum(len(leg.invites) for leg in legs.values())
    retransmitted = sum(1 for leg in legs.values() if leg.invite_copies > len(leg.invites))
    say(
        f"phones: {len(legs)} legs (Call-IDs) of {len(by_uuid)} calls, {invites} initial INVITE "
        f"transactions; by phone: "
        + ", ".join(
            f"{name} {sum(1 for leg in legs.values() if name in leg.phones)}"
            for name in phones.phones
        )
    )
    if strays:
        say(f"messages at the phones with a Call-ID of no leg of ours: {sum(strays.values())}")
    unknown = sorted(uuid for uuid in by_uuid if uuid not in row_of)
    check(
        not unknown,
        f"calls the phones received that no calls row knows: {len(unknown)}",
    )
    for uuid in unknown[:10]:
        seen = sorted(by_uuid[uuid], key=lambda leg: leg.call_id)
        say(
            f"  call {uuid} (no calls row), by its numbers for "
            f"{', '.join(sorted({task_of_number(leg.number) for leg in seen}))}: "
            + "; ".join(
                f"{leg.leg}@{'/'.join(sorted(leg.phones))} {leg.number} {len(leg.invites)} "
                f"INVITE {leg.start:%H:%M:%S.%f} -> {leg.outcome or 'no final response'}"
                for leg in seen
                if leg.start is not None
            )
        )
    # The calls rows' mapping checked against the numbers the phones were called at.
    name_of = {int(t["id"]): str(t["name"]) for t in tasks}
    mismatched = sorted(
        leg.call_id
        for leg in legs.values()
        if leg.call_uuid in row_of
        and leg.number
        and task_of_number(leg.number) != name_of.get(row_of[leg.call_uuid].task_id)
    )
    check(
        not mismatched,
        f"legs whose number belongs to another task than their calls row's: {len(mismatched)}"
        + (f" (e.g. {mismatched[:3]})" if mismatched else ""),
    )

    # 1. No (task, attempt, leg) INVITEd twice: distinct INVITE transactions per leg name,
    # across every call_uuid of the attempt.
    transactions: dict[tuple[int, int, str], set[tuple[str, str, int]]] = defaultdict(set)
    for leg in legs.values():
        row = row_of.get(leg.call_uuid)
        if row is None:
            continue
        for branch, cseq in leg.invites:
            transactions[(row.task_id, row.attempt, leg.leg)].add((leg.call_id, branch, cseq))
    twice = sorted(key for key, seen in transactions.items() if len(seen) > 1)
    check(
        not twice,
        f"(task, attempt) INVITEd twice at the phones (retransmissions aside): "
        f"{len({key[:2] for key in twice})} (legs: {len(twice)}; {retransmitted} legs had "
        "their INVITE retransmitted)",
    )
    for task_id, attempt, leg_name in twice[:10]:
        say(
            f"  INVITEd twice: task {task_id} attempt {attempt} leg {leg_name}: "
            f"{sorted(transactions[(task_id, attempt, leg_name)])}"
        )

    # 2 and 3. Tries against the phones, and against try_count.
    rang: dict[int, set[int]] = defaultdict(set)
    for uuid in by_uuid:
        row = row_of.get(uuid)
        if row is not None and any(leg.invites for leg in by_uuid[uuid]):
            rang[row.task_id].add(row.attempt)
    finished = [t for t in tasks if t["status"] == "finished"]
    unrung = [t for t in finished if int(t["attempts"]) > len(rang.get(int(t["id"]), ()))]
    tries_db = sum(int(t["attempts"]) for t in finished)
    tries_rang = sum(len(rang.get(int(t["id"]), ())) for t in finished)
    say(
        f"tries of finished tasks: {tries_db} counted in the database; {tries_rang} distinct "
        f"(task, attempt) rang a phone; calls rows {len(calls)}"
    )
    missing = sum(int(t["attempts"]) - len(rang.get(int(t["id"]), ())) for t in unrung)
    check(
        not unrung,
        "finished tasks with a try that rang no phone (attempts > attempts at the phones): "
        f"{len(unrung)} ({missing} tries)",
    )
    legs_by_uuid = dict(by_uuid)
    for task in unrung[:10]:
        say("  " + describe(task, rows_of_task.get(int(task["id"]), []), legs_by_uuid))
    over_db = [t for t in tasks if int(t["attempts"]) > int(t["try_count"])]
    over_phones = [
        task_of[task_id]
        for task_id, attempts in rang.items()
        if task_id in task_of
        and (
            len(attempts) > int(task_of[task_id]["try_count"])
            or max(attempts) > int(task_of[task_id]["try_count"])
        )
    ]
    check(not over_db, f"tasks with more attempts than try_count in the database: {len(over_db)}")
    check(
        not over_phones,
        f"tasks whose attempts at the phones exceed try_count: {len(over_phones)}",
    )
    for task in over_phones[:10]:
        say("  " + describe(task, rows_of_task.get(int(task["id"]), []), legs_by_uuid))

    # 4. No queue above its limit, from the calls' intervals at the phones.
    intervals: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for uuid, seen in by_uuid.items():
        row = row_of.get(uuid)
        starts = [leg.start for leg in seen if leg.start is not None]
        ends = [leg.end for leg in seen if leg.end is not None]
        if row is None or not starts or not ends:
            continue
        intervals[row.queue_id].append((min(starts), max(ends)))
    worst = sorted(
        (max_overlap(intervals.get(queue_id, [])), limit, queue_id)
        for queue_id, limit in limits.items()
    )
    over = [w for w in worst if w[0] > w[1]]
    say(
        "queues at the phones (peak calls in progress / limit): "
        + ", ".join(
            f"q{qid} {peak}/{limit}" for peak, limit, qid in sorted(worst, key=lambda w: w[2])
        )
    )
    check(not over, f"queues over their concurrent_task_limit at the phones: {len(over)}")
