"""schemathesis against the whole local system, through Envoy: >= 10,000 generated requests.

`make fuzz` (and `make bench`) runs it: a fresh stack, then schemathesis' coverage cases and
generated requests for every operation of deploy/openapi/scheduler.yaml, valid and invalid
(tests/support/api_fuzz.py), in rounds until FUZZ_REQUESTS (10,000) requests were sent. Prints
the number of requests, 5xx and schema failures; exits 1 on any failure. Results go to
bench/results/fuzz.json, every failure (if any) to
bench/results/fuzz-failures.txt.
Environment: FUZZ_REQUESTS, FUZZ_SEED (an integer, to replay a run).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from deploy.local.stack import Stack
from tests.support import api_fuzz
from tests.support.stacks import service_env, stack_settings

RESULTS = Path(__file__).parent / "results"
OPERATION_MODES = 20  # 10 operations, positive and negative
COVERAGE_CASES = 580  # about what the coverage phase sends


def main() -> int:
    target = int(os.environ.get("FUZZ_REQUESTS", "10000"))
    random_seed = int(os.environ["FUZZ_SEED"]) if "FUZZ_SEED" in os.environ else None
    state_dir = Path(tempfile.mkdtemp(prefix="fuzz-bench-"))
    state_dir.chmod(0o755)  # the embedded PostgreSQL runs as another user
    # No notifier: fuzzed queues never run (see api_fuzz), and nothing may leave loopback.
    stack = Stack(
        stack_settings(state_dir, dispatchers=1, dialers=1, notifiers=0),
        log_dir=state_dir / "logs",
        service_env=service_env(),
    )
    stack.start()
    total = api_fuzz.Report()
    try:
        round_number = 0
        while total.requests < target:
            round_number += 1
            first = round_number == 1
            left = target - total.requests - (COVERAGE_CASES if first else 0)
            examples = max(1, math.ceil(left / OPERATION_MODES))
            own, other = f"fuzz-{round_number}", f"fuzz-other-{round_number}"
            report = api_fuzz.run(
                stack.rest_url,
                own=own,
                own_token=stack.token(own),
                other=other,
                other_token=stack.token(other),
                examples=examples,
                coverage=first,
                random_seed=None if random_seed is None else random_seed + round_number,
                progress=lambda line: print(line, flush=True),
            )
            _merge(total, report)
    finally:
        stack.stop()
    print(total.summary())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fuzz.json").write_text(
        json.dumps(
            {
                "requests": total.requests,
                "seconds": round(total.seconds),
                "statuses": {str(k): v for k, v in sorted(total.statuses.items())},
                "server_errors": len(total.server_errors),
                "schema_failures": len(total.schema_failures),
                "tenancy_leaks": len(total.tenancy_leaks),
                "requests_by_operation": dict(sorted(total.by_operation.items())),
            },
            indent=2,
        )
        + "\n"
    )
    if total.failures:
        api_fuzz.write_failures(total, RESULTS / "fuzz-failures.txt")
    return 1 if total.failures else 0


def _merge(total: api_fuzz.Report, report: api_fuzz.Report) -> None:
    total.requests += report.requests
    total.seconds += report.seconds
    total.statuses.update(report.statuses)
    total.by_operation.update(Counter(report.by_operation))
    total.server_errors += report.server_errors
    total.schema_failures += report.schema_failures
    total.tenancy_leaks += report.tenancy_leaks


if __name__ == "__main__":
    sys.exit(main())
