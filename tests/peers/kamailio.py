"""Kamailio (Debian ``kamailio``, ``kamailio-tls-modules``) as a carrier's proxy, registrar
and SBC on loopback, with a configuration generated here for each run.

Two sides, like a carrier's edge:

- the customer side, where Faxbox registers and sends its calls: UDP and TCP on one
  port, TLS on another (a certificate made at start-up by ``certs``). REGISTER and
  INVITE must authenticate with digest against the ``subscriber`` table (db_text files
  written here); a REGISTER over TCP/TLS records the connection it came on
  (``fix_nated_register``) and calls to that subscriber reuse it; Contacts of replies and
  requests over a stream get an alias (``set_contact_alias``/``handle_ruri_alias``), as
  an SBC does for clients behind NAT;
- the network side, a UDP port where the "PSTN" (pstn-sim) sends calls: an INVITE to a
  number that matches ``did_pattern`` goes to the registered contact of ``did_user``
  (the Request-URI becomes that contact, the dialled number stays in To), everything
  else gets 404.

INVITEs from the customer side go to ``pstn`` (pstn-sim's address). Every dialog is
record-routed (double Record-Route across transports), and in-dialog requests follow
the route set. Everything is on 127.0.0.1, in a directory of the caller's.

``KAMAILIO_BINARY`` overrides /usr/sbin/kamailio.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import children
from tests.peers.certs import Certificates, make_certificates
from tests.support import free_port, servers_required

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DOMAIN = "sip.carrier.test"


def binary() -> str:
    path = os.environ.get("KAMAILIO_BINARY") or shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not Path(path).exists() or not Path(MODULES, "tls.so").exists():
        message = "Kamailio with its TLS module is not installed (deploy/local/apt.sh installs it)"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Kamailio:
    directory: Path
    port: int  # customer side, UDP and TCP
    tls_port: int
    network_port: int  # where pstn-sim sends calls
    users: dict[str, str]
    certificates: Certificates
    process: subprocess.Popen[bytes] | None = None

    @property
    def domain(self) -> str:
        return DOMAIN

    def uri(self, transport: str = "udp") -> str:
        """The registrar/proxy URI on the customer side for ``transport``."""
        if transport.lower() == "tls":
            return f"sip:127.0.0.1:{self.tls_port};transport=tls"
        if transport.lower() == "tcp":
            return f"sip:127.0.0.1:{self.port};transport=tcp"
        return f"sip:127.0.0.1:{self.port}"

    @property
    def network_uri(self) -> str:
        return f"sip:127.0.0.1:{self.network_port}"

    @property
    def log(self) -> Path:
        return self.directory / "kamailio.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _dbtext(directory: Path, users: dict[str, str]) -> Path:
    db = directory / "db"
    db.mkdir(parents=True, exist_ok=True)
    (db / "version").write_text(
        "id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n0:location:9\n"
    )
    rows = ""
    for i, (user, password) in enumerate(users.items(), 1):
        ha1 = hashlib.md5(f"{user}:{DOMAIN}:{password}".encode()).hexdigest()
        ha1b = hashlib.md5(f"{user}@{DOMAIN}:{DOMAIN}:{password}".encode()).hexdigest()
        rows += f"{i}:{user}:{DOMAIN}:{password}:{ha1}:{ha1b}\n"
    (db / "subscriber").write_text(
        "id(int,auto) username(string) domain(string) password(string) ha1(string) "
        "ha1b(string) \n" + rows
    )
    return db


def configuration(
    k: Kamailio, pstn: tuple[str, int], did_pattern: str, did_user: str, db: Path
) -> str:
    tls_cfg = k.directory / "tls.cfg"
    tls_cfg.write_text(
        f"""[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {k.certificates.key_file}
certificate = {k.certificates.cert_file}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""
    )
    stream = '($pr == "tcp" || $pr == "tls")'
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=2
enable_tls=yes
auto_aliases=no
alias="{DOMAIN}"
alias="127.0.0.1:{k.port}"
alias="127.0.0.1:{k.tls_port}"
listen=udp:127.0.0.1:{k.port}
listen=tcp:127.0.0.1:{k.port}
listen=tls:127.0.0.1:{k.tls_port}
listen=udp:127.0.0.1:{k.network_port}
mpath="{MODULES}"
tcp_connection_lifetime=3605
dns=no
rev_dns=no

loadmodule "tls.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "nathelper.so"

modparam("tls", "config", "{tls_cfg}")
modparam("rr", "append_fromtag", 1)
modparam("registrar", "method_filtering", 1)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("tm", "fr_timer", 8000)
modparam("tm", "fr_inv_timer", 90000)

request_route {{
    xlog("L_INFO", "REQ $rm $ru from $si:$sp/$pr on $Rp\\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (!sanity_check("1511", "7")) {{ exit; }}
    if (has_totag()) {{ route(WITHINDLG); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ route(RELAY); }} exit; }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    if (is_method("REGISTER")) {{ route(REGISTRAR); exit; }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    record_route();
    if ($Rp == {k.network_port}) {{ route(TOCUSTOMER); exit; }}
    route(FROMCUSTOMER);
}}

route[WITHINDLG] {{
    if (loose_route()) {{
        handle_ruri_alias();
        route(RELAY);
        exit;
    }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ route(RELAY); }} exit; }}
    sl_send_reply("404", "Not here");
}}

route[REGISTRAR] {{
    if (!auth_check("$fd", "subscriber", "1")) {{ auth_challenge("$fd", "0"); exit; }}
    if {stream} {{ fix_nated_register(); }}
    if (!save("location")) {{ sl_reply_error(); }}
}}

route[FROMCUSTOMER] {{
    # Any subscriber may call with any caller id (flag 0), as a fax trunk allows.
    if (!auth_check("$fd", "subscriber", "0")) {{ auth_challenge("$fd", "0"); exit; }}
    consume_credentials();
    if {stream} {{ set_contact_alias(); }}
    $du = "sip:{pstn[0]}:{pstn[1]}";
    route(RELAY);
}}

route[TOCUSTOMER] {{
    if ($rU =~ "{did_pattern}") {{ $rU = "{did_user}"; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_on_reply("CUSTOMER_REPLY");
    route(RELAY);
}}

onreply_route[CUSTOMER_REPLY] {{
    if {stream} {{ set_contact_alias(); }}
}}

route[RELAY] {{
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def running_kamailio(
    directory: Path,
    *,
    pstn: tuple[str, int],
    users: dict[str, str],
    did_pattern: str = "^[+]?1?646555",
    did_user: str = "faxbox",
    cpu: int | None = None,
) -> Iterator[Kamailio]:
    """Kamailio on free loopback ports, stopped (by its pid) when the block ends.

    ``cpu`` pins it (and the processes it forks) to one core, so a benchmark can keep it
    off the core of the process it measures."""
    exe = binary()
    directory.mkdir(parents=True, exist_ok=True)
    certificates = make_certificates(directory / "tls", (DOMAIN,), ("127.0.0.1",))
    k = Kamailio(
        directory,
        port=free_port(),
        tls_port=free_port(),
        network_port=free_port(socket.SOCK_DGRAM),
        users=users,
        certificates=certificates,
    )
    db = _dbtext(directory, users)
    cfg = directory / "kamailio.cfg"
    cfg.write_text(configuration(k, pstn, did_pattern, did_user, db))
    run = directory / "run"
    run.mkdir(exist_ok=True)
    check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"kamailio -c refused the configuration:\n{check.stderr[-3000:]}")
    with k.log.open("wb") as log:
        k.process = children.spawn(
            [
                exe,
                "-DD",
                "-E",
                "-f",
                str(cfg),
                "-m",
                "64",
                "-M",
                "8",
                "-Y",
                str(run),
                "-P",
                str(run / "kamailio.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            preexec=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        try:
            deadline = time.monotonic() + 20
            while not (_listening(k.port) and _listening(k.tls_port)):
                if k.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Kamailio did not start:\n{k.log_text()[-3000:]}")
                time.sleep(0.1)
            yield k
        finally:
            children.end(k.process.pid, grace_s=10)
            k.process.wait(5)
