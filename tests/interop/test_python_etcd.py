"""python-etcd 0.4.5's own integration tests, run against `corral etcd` and against etcd 3.4.

The tests ship inside the package (`etcd.tests.integration`, `etcd.tests.test_auth`) and
start their servers as `etcd` from PATH, on fixed ports 6001-6003 / 7001-7003 / 8001-8003.
Each run gets a network namespace of its own (`unshare --net`, loopback only), so those ports
never meet anything else on the host, and runs may overlap. A shim directory
first on PATH holds an `etcd` that execs either `python -m corral etcd "$@"` or the real
etcd (with `ETCD_ENABLE_V2=true`, as etcd 3.4 needs).

A small pytest plugin replaces the helper's fixed `time.sleep(2)` after starting and after
killing a member by waiting for the real event instead (the member answers `/v2/keys`;
the killed process has exited), which makes the run several times faster and no less
strict. The package's own test bodies are unchanged.

Baseline, recorded on etcd 3.4.23 (see `ETCD_BASELINE`, re-checked by the slow test):
* `test_simple`: all 17 pass.
* `test_ssl`: every test errors in setup: the helper builds its test CA with
  `X509.add_extensions`, which current pyOpenSSL no longer has. (Past that, it would start
  etcd with `-ca-file`, a flag etcd 3.4 does not have, so etcd would exit at once.)
* `test_auth`: every test fails with "Could not fetch user 'root'": python-etcd 0.4.5 reads
  the etcd-2.1 auth JSON, while etcd 2.2+ and 3.4 answer with full user objects.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

PLUGIN = '''
import shutil
import time as _time
import urllib.error
import urllib.request

from etcd.tests.integration import helpers


class _NoFixedSleep:
    """The helper's `time`, minus its fixed sleeps (replaced by real waits below)."""

    def __getattr__(self, name):
        return getattr(_time, name)

    @staticmethod
    def sleep(_seconds):
        return None


helpers.time = _NoFixedSleep()
_run = helpers.EtcdProcessHelper.run


def _wait_ready(helper, timeout=60.0):
    deadline = _time.monotonic() + timeout
    for slot, (_, proc) in list(helper.processes.items()):
        url = "http://127.0.0.1:%d/v2/keys/" % (helper.port_range_start + slot)
        while _time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                _time.sleep(0.05)


def _wait_published(helper, number, timeout=2.0):
    # Every member's client URL is listed, as the helper's fixed sleeps used to ensure.
    deadline = _time.monotonic() + timeout
    url = "http://127.0.0.1:%d/v2/machines" % helper.port_range_start
    while _time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if len(resp.read().decode().split(",")) >= number:
                    return
        except OSError:
            pass
        _time.sleep(0.05)


def run(self, number=1, *args, **kwargs):
    _run(self, number, *args, **kwargs)
    if self.schema == "http://":
        _wait_ready(self)
        _wait_published(self, number)


def kill_one(self, slot):
    data_dir, process = self.processes.pop(slot)
    process.kill()
    process.wait(timeout=30)
    shutil.rmtree(data_dir)


helpers.EtcdProcessHelper.run = run
helpers.EtcdProcessHelper.kill_one = kill_one
'''

SIMPLE_TESTS = [
    "TestClusterFunctions::test_reconnect",
    "TestClusterFunctions::test_reconnect_not_allowed",
    "TestClusterFunctions::test_reconnect_with_several_hosts_passed",
    "TestClusterFunctions::test_reconnet_fails",
    "TestErrors::test_creating_already_existing_directory",
    "TestErrors::test_is_not_a_file",
    "TestErrors::test_test_and_set",
    "TestSimple::test_directory_ttl_update",
    "TestSimple::test_get_set_delete",
    "TestSimple::test_machines",
    "TestSimple::test_retrieve_subkeys",
    "TestSimple::test_update",
    "TestSimple::test_leader",
    "TestWatch::test_watch",
    "TestWatch::test_watch_generator",
    "TestWatch::test_watch_indexed",
    "TestWatch::test_watch_indexed_generator",
]

# Recorded on etcd 3.4.23; the slow test below re-checks it.
ETCD_BASELINE: dict[str, str] = dict.fromkeys(SIMPLE_TESTS, "passed")


FIXED_PORTS = [6001, 6002, 6003, 6004, 7001, 7002, 7003, 8001, 8002, 8003]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_python_etcd(kind: str, modules: list[str], tmp: Path) -> dict[str, str]:
    """Run python-etcd test modules with `etcd` = `kind`; test id → passed/failed/error."""
    shim = tmp / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "python_etcd_speedup.py").write_text(PLUGIN)
    exe = shim / "etcd"
    if kind == "corral":
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m corral etcd "$@"\n')
    else:
        exe.write_text('#!/bin/sh\nETCD_ENABLE_V2=true exec /usr/bin/etcd "$@"\n')
    exe.chmod(0o755)
    report = tmp / f"{kind}.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "PYTEST"))}
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(shim), *sys.path])
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "python_etcd_speedup",
            "-q", "-W", "ignore", "--rootdir", str(work), "-c", os.devnull,
            f"--junitxml={report}", "--pyargs", *modules]  # fmt: skip
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if os.geteuid() == 0 and unshare and ip:
        # A private network namespace with only loopback: the fixed ports are ours alone.
        argv = [unshare, "--net", "--", "sh", "-c", f'"{ip}" link set lo up && exec "$@"', "sh",
                *argv]  # fmt: skip
    else:
        busy = [port for port in FIXED_PORTS if _listening(port)]
        assert not busy, f"ports python-etcd's helper needs are taken: {busy}"
    # Own session, so the members the helper starts die with the run (even on timeout).
    proc = subprocess.Popen(
        argv,
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=280)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if not report.exists():
        raise AssertionError(f"python-etcd tests did not run:\n{out}")
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
        outcomes[name] = status
    return outcomes


def test_python_etcd_simple_against_corral(tmp_path: Path) -> None:
    got = run_python_etcd("corral", ["etcd.tests.integration.test_simple"], tmp_path)
    assert got == ETCD_BASELINE


@pytest.mark.slow
def test_python_etcd_baseline_on_etcd(tmp_path: Path) -> None:
    got = run_python_etcd("etcd", ["etcd.tests.integration.test_simple"], tmp_path)
    assert got == ETCD_BASELINE


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["etcd", "corral"])
def test_python_etcd_ssl_and_auth_fail_on_both(kind: str, tmp_path: Path) -> None:
    got = run_python_etcd(kind, ["etcd.tests.integration.test_ssl", "etcd.tests.test_auth"],
                          tmp_path)
    assert got, "no tests ran"
    assert all(v in ("failed", "error") for v in got.values()), got
