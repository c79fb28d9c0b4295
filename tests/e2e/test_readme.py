"""The README's curl examples work as printed."""

from __future__ import annotations

import os
import re
import subprocess

from deploy.local.stack import DEMO_CALLER_ID, ROOT, Stack


def test_readme_curl_examples_run_clean(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 2
    script = "set -euo pipefail\n" + "\n".join(blocks)
    # As `make run` does: the examples' caller id is the demo tenant's own.
    stack.admin("caller-id", "add", "demo", DEMO_CALLER_ID)
    for endpoint in (
        "-X POST", "-X PUT", "-X DELETE", "/tasks/", "/task/$TASK", "/task/?", "$TASK/calls"
    ):  # fmt: skip
        assert endpoint in script
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "API": stack.rest_url, "TOKEN": stack.token("demo")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status":"on"' in result.stdout
    assert '"concurrent_task_limit":5' in result.stdout
    assert "idempotent-replayed: true" in result.stdout.lower()
    assert '"start_time_utc":"2030-01-02 10:30:00"' in result.stdout
    assert '"extended_a_numbers":["+15550001112"]' in result.stdout
    # The second block watched a task finish and read its call record.
    assert '"finish_result":"success"' in result.stdout
    assert '"result":"connected"' in result.stdout
