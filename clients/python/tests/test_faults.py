"""The blocking client under faults, on clusters of its own: a lease that
runs out, the leader killed with SIGKILL under a held lock and a waiting
process, an acquire whose outcome is unknown, and processes racing on a
counter under the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import raftlock


def _env(cluster) -> dict:
    env = dict(os.environ)
    env["RAFTLOCK_ENDPOINTS"] = ",".join(cluster.endpoints)
    for k in ("RAFTLOCK_CA", "RAFTLOCK_CERT", "RAFTLOCK_KEY", "RAFTLOCK_TOKEN"):
        env.pop(k, None)
    return env


def test_a_session_whose_keep_alives_stop_reports_the_loss_before_anyone_else_gets_the_lock(cluster):
    client = raftlock.Client(cluster.endpoints, use_env=False)
    lost_at = []
    holder = client.session(ttl=2, drift_margin=0.2, on_lost=lambda s: lost_at.append(time.monotonic()))
    guard = holder.lock("jobs/lost", wait=0)
    other = client.session(ttl=10)
    got = {}

    def wait():
        g = other.lock("jobs/lost", wait=15)
        got["at"], got["token"] = time.monotonic(), g.token
        g.release()

    holder.pause_keep_alives()  # a frozen process: no more keep-alives
    t = threading.Thread(target=wait)
    t.start()
    assert guard.lost.wait(5), "the loss is reported"
    assert not guard.is_valid() and guard.remaining() == 0
    t.join(20)
    assert "at" in got, "the other session got the lock once the lease expired"
    assert lost_at and lost_at[0] < got["at"], "the holder knew first"
    assert got["token"] > guard.token
    with pytest.raises(raftlock.LeaseLost):
        guard.release()
    holder.close()
    other.close()
    client.close()


def test_the_leader_killed_under_a_with_block_keeps_the_hold_and_the_waiter_gets_a_larger_token(fresh_cluster):
    cluster = fresh_cluster(3)
    client = raftlock.Client(cluster.endpoints, use_env=False, retry=raftlock.RetryPolicy.patient())
    waiter_code = textwrap.dedent(
        """
        import json, sys, raftlock
        client = raftlock.Client(retry=raftlock.RetryPolicy.patient())
        with client.session(ttl=10) as s:
            print("waiting", flush=True)
            with s.lock("jobs/failover", wait=60) as g:
                print(json.dumps({"token": g.token}), flush=True)
        """
    )
    with client.session(ttl=6) as session:
        with session.lock("jobs/failover", wait=0) as guard:
            token = guard.token
            waiter = subprocess.Popen(
                [sys.executable, "-c", waiter_code], env=_env(cluster), stdout=subprocess.PIPE, text=True
            )
            try:
                assert waiter.stdout.readline().strip() == "waiting"
                deadline = time.monotonic() + 10
                while not client.inspect("jobs/failover").queue and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert client.inspect("jobs/failover").queue, "the other process waits"
                old = cluster.leader_id()
                cluster.kill(old)
                new = cluster.wait_for_leader(not_id=old)
                assert new != old
                # The hold and its token survived; the session stayed valid
                # (its keep-alives moved to the new leader).
                info = client.inspect("jobs/failover")
                assert [(h.lease_id, h.token) for h in info.holders] == [(session.lease_id, token)]
                assert len(info.queue) == 1
                time.sleep(7)  # longer than the ttl: the keep-alives must have carried on
                assert guard.is_valid() and not session.lost.is_set()
                assert client.inspect("jobs/failover").holders[0].token == token
            except BaseException:
                waiter.kill()
                raise
        out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0
    got = json.loads(out.strip().splitlines()[-1])["token"]
    assert got > token
    client.close()


def test_an_acquire_whose_outcome_is_unknown_leaves_nothing_behind(fresh_cluster):
    cluster = fresh_cluster(3)
    patient = raftlock.Client(cluster.endpoints, use_env=False, retry=raftlock.RetryPolicy.patient())
    # No retries: the leader's death mid-wait is an unknown outcome.
    once = raftlock.Client(cluster.endpoints, use_env=False, retry=raftlock.RetryPolicy.none())
    holder = patient.session(ttl=8)
    guard = holder.lock("jobs/unknown", wait=0)
    once.status()  # learn the leader
    leader = cluster.leader_id()
    assert once.current_endpoint == cluster.endpoint(leader)
    waiter = once.session(ttl=8)  # its acquire goes through the client with no retries
    errs = []

    def wait():
        try:
            waiter.lock("jobs/unknown", wait=30)
        except raftlock.Error as e:
            errs.append(e)

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + 10
    while not patient.inspect("jobs/unknown").queue and time.monotonic() < deadline:
        time.sleep(0.05)
    assert patient.inspect("jobs/unknown").queue
    cluster.kill(leader)
    t.join(30)
    assert errs and errs[0].may_have_been_applied, errs
    cluster.wait_for_leader(not_id=leader)
    # The session withdraws what its lost attempt left: no queue entry, no
    # hold, even after the holder releases.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = patient.inspect("jobs/unknown")
        mine = [q for q in (info.queue if info else []) if q.lease_id == waiter.lease_id]
        if not mine and not waiter._names:
            break
        time.sleep(0.1)
    info = patient.inspect("jobs/unknown")
    assert not [q for q in info.queue if q.lease_id == waiter.lease_id]
    guard.release()
    time.sleep(0.5)
    info = patient.inspect("jobs/unknown")
    assert info is None or not [h for h in info.holders if h.lease_id == waiter.lease_id]
    # The name is usable on the session again.
    waiter.lock("jobs/unknown", wait=5).release()
    holder.close()
    waiter.close()
    once.close()
    patient.close()


COUNTER_WORKER = textwrap.dedent(
    """
    import sys, time, raftlock
    path, rounds = sys.argv[1], int(sys.argv[2])
    client = raftlock.Client(retry=raftlock.RetryPolicy.patient())
    with client.session(ttl=10, owner="counter") as session:
        for _ in range(rounds):
            with session.lock("test_counter/counter", wait=60) as guard:
                with open(path) as f:
                    n = int(f.read())
                time.sleep(0.002)  # read, sleep, write: lost updates if two ran at once
                with open(path + ".tmp", "w") as f:
                    f.write(str(n + 1))
                import os
                os.replace(path + ".tmp", path)
    """
)


@pytest.mark.timeout_s(240)
def test_eight_processes_each_adding_25_under_the_lock_end_exact(cluster, tmp_path: Path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    env = _env(cluster)
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTER_WORKER, str(counter), "25"], env=env)
        for _ in range(8)
    ]
    try:
        codes = [p.wait(timeout=200) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * 8
    assert counter.read_text() == "200"
