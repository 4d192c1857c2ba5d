"""Claims on runner addresses: held while the claiming process lives, refused once it has exited."""

from __future__ import annotations

import os
import subprocess
import sys

from falemu.runtime import addresses


def test_an_address_is_alive_while_its_process_runs_and_refused_after_it_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert addresses.claim("10.255.0.7", 8000, proc.pid)
        assert addresses.holder_alive("10.255.0.7", 8000)
        assert addresses.holder_alive("10.255.0.7", 8001)  # never claimed: nothing to check
    finally:
        proc.kill()
        proc.wait()
    assert not addresses.holder_alive("10.255.0.7", 8000)
    addresses.release("10.255.0.7", 8000, proc.pid)
    assert addresses.holder_alive("10.255.0.7", 8000)


def test_a_process_this_host_cannot_see_is_no_claim_and_release_keeps_a_later_claim() -> None:
    assert not addresses.claim("10.255.0.8", 8000, 0)
    assert not addresses.claim("10.255.0.8", 8000, 2**22 + 12345)  # above pid_max: no such process
    assert addresses.claim("10.255.0.8", 8000, os.getpid())
    addresses.release("10.255.0.8", 8000, os.getppid())  # an earlier holder's release leaves this claim
    assert addresses._claims[("10.255.0.8", 8000)].pid == os.getpid()
    addresses.release("10.255.0.8", 8000, os.getpid())
    assert ("10.255.0.8", 8000) not in addresses._claims


def test_the_start_time_tells_a_process_from_a_later_one_with_its_pid() -> None:
    started = addresses.process_start(os.getpid())
    assert started is not None
    assert started.isdigit()
    assert addresses.process_start(os.getpid()) == started
    assert addresses.process_start(1) != started or os.getpid() == 1
