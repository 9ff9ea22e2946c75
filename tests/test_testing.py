"""The test helpers users get: a private redis-server that cannot outlive its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from interactive_celery.testing import wait_for

OWNER = """
import sys, time
from interactive_celery.testing import RedisServer
server = RedisServer(data_dir=sys.argv[1]).start()
print(server.process.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for a reaper is gone for our purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_redis_server_stops_when_its_owner_is_killed(tmp_path):
    """A test run killed by a timeout or kill -9 runs no clean-up; its redis-server still stops."""
    # The killed owner cannot remove its data directory, so it gets one pytest removes.
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    redis_pid = int(owner.stdout.readline())
    assert _alive(redis_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    wait_for(lambda: not _alive(redis_pid), timeout=15, what=f"redis-server {redis_pid} to stop")
