"""The image definition lints (hadolint)."""

from __future__ import annotations

import subprocess

from deploy.local.stack import BIN
from tests.support.manifests import DOCKERFILE


def test_dockerfile_passes_hadolint() -> None:
    run = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
