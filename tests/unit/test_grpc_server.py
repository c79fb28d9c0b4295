"""The gRPC server every service runs: a taken port fails the start instead of sharing the
port, and a stop that hangs still ends the process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import grpc
import pytest

from services.common.grpcserver import CannotListen, start_server


async def test_a_taken_port_is_an_error_at_start() -> None:
    # The holder sets SO_REUSEPORT, as every gRPC server does by default (another stack's
    # service, an old replica): the kernel would let a second such server share the port.
    holder = grpc.aio.server()
    port = holder.add_insecure_port("127.0.0.1:0")
    await holder.start()
    try:
        with pytest.raises(CannotListen, match=f"127.0.0.1:{port}"):
            await start_server(f"127.0.0.1:{port}", lambda server: [])
    finally:
        await holder.stop(None)


HANGING_SERVICE = textwrap.dedent(
    """
    import asyncio
    from services.common.logs import configure
    from services.common.grpcserver import serve

    async def hang_forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        await serve(
            "127.0.0.1:0",
            lambda server: [],
            on_shutdown=hang_forever,
            grace_seconds=0,
            shutdown_deadline_seconds=0.5,
        )

    configure()
    asyncio.run(main())
    """
)


def test_a_stop_that_hangs_ends_the_process_and_says_where_it_hung() -> None:
    service = subprocess.Popen(
        [sys.executable, "-c", HANGING_SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert service.stdout is not None
    lines: list[dict[str, object]] = []
    for line in service.stdout:  # read until it serves: the signal handler is set by then
        lines.append(json.loads(line))
        if lines[-1].get("action") == "start":
            break
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 70
    lines += [json.loads(line) for line in service.stdout]
    service.stdout.close()
    [report] = [line for line in lines if line.get("action") == "stop_timeout"]
    assert "hang_forever" in json.dumps(report["tasks"])
