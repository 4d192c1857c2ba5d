"""Claims on runner addresses: held by the claiming process while it lives, never by another runner."""

from __future__ import annotations

import os
import subprocess
import sys

from falemu.runtime import addresses


def test_an_address_is_held_while_its_process_runs_and_refused_after_it_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert addresses.claim("10.255.0.7", 8000, proc.pid)
        assert addresses.holds("10.255.0.7", 8000, proc.pid)
        assert addresses.holds("10.255.0.7", 8001, 0)  # a runner reached otherwise: nothing to check
        assert not addresses.holds("10.255.0.7", 8001, proc.pid)  # never claimed by it
    finally:
        proc.kill()
        proc.wait()
    assert not addresses.holds("10.255.0.7", 8000, proc.pid)
    addresses.release("10.255.0.7", 8000, proc.pid)
    assert not addresses.holds("10.255.0.7", 8000, proc.pid)  # released: still not its address


def test_a_later_claim_of_the_address_is_not_the_earlier_runners() -> None:
    assert not addresses.claim("10.255.0.8", 8000, 0)
    assert not addresses.claim("10.255.0.8", 8000, 2**22 + 12345)  # above pid_max: no such process
    assert addresses.claim("10.255.0.8", 8000, os.getppid())
    assert addresses.claim("10.255.0.8", 8000, os.getpid())  # the address went to a later runner
    assert not addresses.holds("10.255.0.8", 8000, os.getppid())
    assert addresses.holds("10.255.0.8", 8000, os.getpid())
    addresses.release("10.255.0.8", 8000, os.getppid())  # the earlier runner's release keeps the later claim
    assert addresses.holds("10.255.0.8", 8000, os.getpid())
    addresses.release("10.255.0.8", 8000, os.getpid())
    assert not addresses.holds("10.255.0.8", 8000, os.getpid())


def test_the_start_time_tells_a_process_from_a_later_one_with_its_pid() -> None:
    started = addresses.process_start(os.getpid())
    assert started is not None
    assert started.isdigit()
    assert addresses.process_start(os.getpid()) == started
