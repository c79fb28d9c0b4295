"""Kamailio (Debian's `kamailio`) as a real SIP proxy between the dialer and the sipp phones.

A minimal stateful proxy without a database: digest authentication of every new INVITE
against one fixed account (`pv_proxy_authenticate`), Record-Route, `sanity_check` of what we
send, and a static number -> phone table. Every request it receives is logged with the xlog
line `REQ <method> <call-id> <cseq> <protocol>`, so a test can count what reached it and how.
With `tls`, it also listens for SIP over TLS (Debian's `kamailio-tls-modules`) on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.sip.phones import bound

PROXY_HOST = "127.0.0.10"
REALM = "callback.test"
_MODULES = (
    *("tm", "tmx", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog", "auth"),
    "sanity",
)

_CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
tcp_source_ipv4={host}
mpath="{mpath}"
{modules}
modparam("tm", "fr_inv_timer", 120000)
{tls}

request_route {{
    xlog("L_NOTICE", "REQ $rm $ci $cs $pr\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check()) {{
        xlog("L_ERR", "INSANE $rm $ci\\n");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "ROUTED $rm $ci to $ru via $du\n");
            if (!t_relay()) {{
                xlog("L_ERR", "RELAY FAILED $rm $ci\n");
            }}
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    if (is_method("INVITE")) {{
        if ($au != "{username}" || !pv_proxy_authenticate("{realm}", "{password}", "0")) {{
            proxy_challenge("{realm}", "0");
            exit;
        }}
        consume_credentials();
        record_route();
    }}
{routing}
    sl_send_reply("404", "Unknown Number");
}}

onreply_route {{
    xlog("L_NOTICE", "REPLY $rs $rm $ci $cs from $si:$sp\n");
}}
"""


@dataclass(frozen=True)
class ProxyTls:
    """The proxy's TLS listener: its port and its certificate chain and key (PEM files)."""

    port: int
    cert_file: Path
    key_file: Path
    # Honour a Via `alias` (RFC 5923): requests towards the Via's address go back on the
    # connection the message came on, instead of a new one.
    accept_aliases: bool = False


# Kamailio's TLS module (kamailio-tls-modules): a listener, the proxy's certificate, TLS 1.2
# or later. Connections the proxy opens itself (towards the dialer's listener) do not check
# the dialer's certificate: the dialer's own checks are what the tests are about.
_TLS = """enable_tls=yes
listen=tls:{host}:{port}
tcp_accept_aliases={aliases}
loadmodule "tls.so"
modparam("tls", "certificate", "{cert}")
modparam("tls", "private_key", "{key}")
modparam("tls", "tls_method", "TLSv1.2+")
"""


@dataclass
class Proxy:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def log(self) -> str:
        return (self.workdir / "kamailio.log").read_text(errors="replace")

    def requests(self, method: str) -> list[str]:
        """The `REQ` log lines of every `method` request that reached the proxy."""
        return [line for line in self.log().splitlines() if f"REQ {method} " in line]

    def stop(self) -> None:
        """Stop Kamailio and every process it forked: they form their own process group
        (started in a new session), and a worker orphaned by a main process that died first
        ignores SIGTERM, so the whole group gets SIGKILL after the main process's own exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _command(
    port: int,
    phones: dict[str, tuple[str, int]],
    transport: str,
    account: tuple[str, str],
    host: str,
    tls: ProxyTls | None,
) -> tuple[list[str], Path]:
    """Write the config into a new folder; the command line that runs it, and the folder."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not Path(binary).exists():
        raise RuntimeError("kamailio is not installed (make test installs Debian's kamailio)")
    mpath = next(Path("/usr/lib").glob("*/kamailio/modules"), Path("/usr/lib/kamailio/modules"))
    routing = "".join(
        f'    if ($rU == "{number}") {{\n'
        f'        $du = "sip:{phone_host}:{phone_port};transport={transport}";\n'
        "        t_relay();\n        exit;\n    }\n"
        for number, (phone_host, phone_port) in phones.items()
    )
    username, password = account
    config = _CONFIG.format(
        host=host,
        port=port,
        mpath=mpath,
        modules="\n".join(f'loadmodule "{name}.so"' for name in _MODULES),
        realm=REALM,
        username=username,
        password=password,
        routing=routing,
        tls=_TLS.format(
            host=host,
            port=tls.port,
            cert=tls.cert_file,
            key=tls.key_file,
            aliases="yes" if tls.accept_aliases else "no",
        )
        if tls
        else "",
    )
    workdir = Path(tempfile.mkdtemp(prefix="kamailio-"))
    (workdir / "kamailio.cfg").write_text(config)
    command = [
        binary,
        "-f",
        str(workdir / "kamailio.cfg"),
        "-DD",  # foreground, no daemon: the test stops it by its pid
        "-E",  # log to stderr
        "-P",
        str(workdir / "kamailio.pid"),
        "-Y",
        str(workdir),  # runtime dir (control FIFOs), not /run/kamailio
        "-m",
        "64" if tls else "32",  # OpenSSL's contexts live in shared memory
        "-M",
        "8",
    ]
    return command, workdir


async def start_proxy(
    port: int,
    phones: dict[str, tuple[str, int]],
    *,
    transport: Literal["udp", "tcp"],
    account: tuple[str, str],
    host: str = PROXY_HOST,
    tls: ProxyTls | None = None,
) -> Proxy:
    """Kamailio on host:port (UDP and TCP, and TLS on `tls.port`), relaying number -> (phone
    host, port) over `transport`, challenging every new INVITE for `account` (username,
    password)."""
    command, workdir = _command(port, phones, transport, account, host, tls)
    with (workdir / "kamailio.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220  # starts at once; nothing to await
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    proxy = Proxy(host, port, process, workdir)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # a bound on the start, generous on a loaded machine
    while not (
        bound(host, port, "udp")
        and bound(host, port, "tcp")
        and (tls is None or bound(host, tls.port, "tcp"))
    ):
        if process.poll() is not None or loop.time() > deadline:
            proxy.stop()
            raise RuntimeError(f"kamailio did not start on {host}:{port}: {proxy.log()[-3000:]}")
        await asyncio.sleep(0.02)
    return proxy
