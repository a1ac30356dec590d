"""The blocking client against the shared 3-node cluster: every call, the
same-session rule, modes, reads, watches, recipes, bad input."""

from __future__ import annotations

import threading
import time

import pytest

import raftlock
from raftlock import Mode


@pytest.fixture
def client(cluster):
    c = raftlock.Client(cluster.endpoints, use_env=False)
    yield c
    c.close()


@pytest.fixture
def prefix(request):
    # The shared cluster outlives this test: names of its own.
    return f"{request.node.name}/"


def test_a_with_lock_holds_the_name_with_a_token_and_releases_on_exit(client, prefix):
    name = prefix + "jobs/nightly"
    with client.session(ttl=10, owner="pytest") as session:
        with session.lock(name, wait=5, reason="backup", metadata={"host": "h1"}) as guard:
            assert guard.token > 0 and guard.name == name and guard.mode == Mode.EXCLUSIVE
            assert guard.is_valid() and 0 < guard.remaining() <= 10 - 0.5
            info = client.inspect(name)
            assert info is not None
            (h,) = info.holders
            assert (h.lease_id, h.owner, h.token, h.reason, h.metadata) == (
                session.lease_id,
                "pytest",
                guard.token,
                "backup",
                {"host": "h1"},
            )
            first = guard.token
        assert guard.released and not guard.is_valid() and guard.remaining() == 0
        assert client.inspect(name) is None
        with session.lock(name, wait=5) as again:
            assert again.token > first, "tokens only grow on a name"


def test_validity_counts_from_the_send_time_minus_the_drift_margin(client):
    before = time.monotonic()
    with client.session(ttl=4, drift_margin=0.5) as s:
        after = time.monotonic()
        until = s.valid_until()
        assert until is not None
        # Counted from when the grant was sent: never later than its answer.
        assert before + 4 - 0.5 <= until <= after + 4 - 0.5 + 0.01
        # Keep-alives go every ttl/3 and move it on.
        time.sleep(2.0)
        assert s.valid_until() > until
        assert s.is_valid() and not s.lost.is_set()
    assert s.ended.is_set() and not s.lost.is_set() and s.valid_until() is None


def test_busy_wait_timeout_and_the_same_session_rule(client, prefix):
    name = prefix + "x"
    with client.session(ttl=10) as a, client.session(ttl=10) as b:
        with a.lock(name):
            with pytest.raises(raftlock.LockBusy) as busy:
                b.try_lock(name)
            assert busy.value.reason == "LOCK_BUSY" and not busy.value.may_have_been_applied
            t0 = time.monotonic()
            with pytest.raises(raftlock.WaitTimeout):
                b.lock(name, wait=0.5)
            assert 0.4 < time.monotonic() - t0 < 5
            # Nothing of b is left queued.
            assert client.inspect(name).queue == []
            with pytest.raises(raftlock.AlreadyHeld):
                a.lock(name, wait=0)
            assert a.holds(name) and not b.holds(name)


def test_a_waiter_is_granted_in_order_with_a_larger_token(client, prefix):
    name = prefix + "queue"
    got = []
    with client.session(ttl=10) as a, client.session(ttl=10) as b, client.session(ttl=10) as c:
        first = a.lock(name)

        def wait(s, tag):
            g = s.lock(name, wait=10)
            got.append((tag, g.token))
            g.release()

        tb = threading.Thread(target=wait, args=(b, "b"))
        tb.start()
        deadline = time.monotonic() + 5
        while len(client.inspect(name).queue) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        tc = threading.Thread(target=wait, args=(c, "c"))
        tc.start()
        while len(client.inspect(name).queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.release()
        tb.join(15)
        tc.join(15)
    assert [t for t, _ in got] == ["b", "c"], "FIFO"
    assert first.token < got[0][1] < got[1][1]


def test_extend_records_an_extension_and_can_change_the_ttl(client, prefix):
    with client.session(ttl=5) as s, s.lock(prefix + "e") as g:
        assert g.extend() == 1
        assert g.extend(ttl=8) == 2
        assert s.ttl == 8
        assert client.inspect(prefix + "e").holders[0].extensions == 2


def test_shared_semaphore_and_several_names_at_once(client, prefix):
    with client.session(ttl=10) as a, client.session(ttl=10) as b:
        r1, r2 = a.read_lock(prefix + "rw"), b.read_lock(prefix + "rw")
        assert {h.mode for h in client.inspect(prefix + "rw").holders} == {Mode.SHARED}
        with client.session(ttl=5) as writer, pytest.raises(raftlock.LockBusy):
            writer.write_lock(prefix + "rw", wait=0)
        r1.release()
        r2.release()
        s1 = a.semaphore(prefix + "sem", permits=2)
        s2 = b.semaphore(prefix + "sem", permits=2)
        with client.session(ttl=5) as c:
            with pytest.raises(raftlock.LockBusy):
                c.semaphore(prefix + "sem", permits=2, wait=0)
            with pytest.raises(raftlock.Conflict) as e:
                c.semaphore(prefix + "sem", permits=3, wait=0)
            assert e.value.reason == "PERMITS_MISMATCH"
        s1.release()
        s2.release()
        names = [prefix + "m/b", prefix + "m/a"]
        with a.lock_many(names, modes={prefix + "m/b": "shared"}) as g:
            assert g.names == tuple(sorted(names))
            assert {h.name: h.token for h in g.holds} == {n: g.token for n in names}
            with pytest.raises(raftlock.LockBusy):
                b.lock_many([prefix + "m/a", prefix + "m/c"], wait=0)
            # All or none: m/c was not taken.
            assert client.inspect(prefix + "m/c") is None


def test_list_pages_through_every_lock_and_leases_show_holds(client, prefix):
    with client.session(ttl=10, owner="lister") as s:
        guards = [s.lock(f"{prefix}l/{i}") for i in range(5)]
        names = [l.name for l in client.list(prefix + "l/", page_size=2)]
        assert names == [f"{prefix}l/{i}" for i in range(5)]
        assert [l.name for l in client.list(prefix + "l/", stale=True)] == names
        (mine,) = [l for l in client.leases() if l.lease_id == s.lease_id]
        assert mine.owner == "lister" and sorted(mine.holds) == names
        assert s.info().holds == mine.holds
        for g in guards:
            g.release()


def test_watch_delivers_events_in_order_and_resumes_from_a_revision(client, prefix):
    name = prefix + "w"
    start = client.status().token_high_water + 1
    with client.session(ttl=10) as s:
        s.lock(name).release()
        s.lock(name).release()
    seen = []
    with client.watch(prefix, from_revision=start) as w:
        for ev in w:
            seen.append(ev)
            if len([e for e in seen if e.type == "released"]) == 2:
                break
        last = w.last_revision
    assert [e.type for e in seen] == ["acquired", "released", "acquired", "released"]
    assert all(e.name == name for e in seen)
    revs = [e.revision for e in seen]
    assert revs == sorted(revs) and len(set(revs)) == 4
    # Resuming after the last one gets nothing old again.
    with client.session(ttl=10) as s:
        s.lock(name).release()
    with client.watch(prefix, from_revision=last + 1) as w:
        ev = next(iter(w))
    assert ev.revision > last and ev.type == "acquired"


def test_a_watch_closed_from_another_thread_stops(client, prefix):
    w = client.watch(prefix + "never/")
    out = []
    t = threading.Thread(target=lambda: out.extend(w))
    t.start()
    time.sleep(0.3)
    w.close()
    t.join(5)
    assert not t.is_alive() and out == []


def test_force_release_ends_a_hold_and_the_holder_finds_out_on_release(client, prefix):
    name = prefix + "f"
    with client.session(ttl=10) as s:
        g = s.lock(name)
        (h,) = client.force_release(name)
        assert h.lease_id == s.lease_id
        with pytest.raises(raftlock.NotHolder):
            g.release()
        # The name is free on the session again.
        s.lock(name, wait=0).release()


def test_one_off_locks_and_decorators(client, prefix, monkeypatch, cluster):
    name = prefix + "d"
    g = client.lock(name, ttl=5, owner="one-off", wait=0)
    lease = g.session.lease_id
    assert client.inspect(name).holders[0].owner == "one-off"
    g.release()
    assert lease not in [l.lease_id for l in client.leases()], "its lease is revoked with it"

    @client.locked(name, wait=0)
    def work():
        return client.inspect(name).holders[0].token

    assert work() > 0 and client.inspect(name) is None

    monkeypatch.setenv("RAFTLOCK_ENDPOINTS", ",".join(cluster.endpoints))
    monkeypatch.setattr(raftlock.recipes, "_default", None)

    @raftlock.locked(name, wait=0)
    def work2():
        return client.inspect(name) is not None

    assert work2()
    with client.session(ttl=5) as s:

        @s.locked(name, mode="shared")
        def read():
            return client.inspect(name).holders[0].mode

        assert read() == Mode.SHARED


def test_election_and_fenced_resource(client, prefix):
    name = prefix + "election"
    with client.session(ttl=10) as a, client.session(ttl=10) as b:
        ea, eb = raftlock.Election(a, name), raftlock.Election(b, name)
        assert ea.leader() is None
        la = ea.campaign("a", wait=1)
        assert eb.leader().value == "a"
        with pytest.raises(raftlock.WaitTimeout):
            eb.campaign("b", wait=0.3)
        store = raftlock.FencedResource([])
        store.write(la.token, lambda l: l.append("a"))
        la.release()
        lb = eb.campaign("b", wait=2)
        assert lb.token > la.token and ea.leader().value == "b"
        store.write(lb.token, lambda l: l.append("b"))
        with pytest.raises(raftlock.StaleToken):
            store.read(la.token, len)
        assert store.highest == lb.token
        lb.release()


def test_bad_input_gets_clear_errors(client, prefix, tmp_path):
    with pytest.raises(raftlock.InvalidArgument) as e:
        client.session(ttl=0.5)
    assert e.value.reason == "TTL_OUT_OF_RANGE"
    with pytest.raises(raftlock.InvalidArgument) as e:
        client.inspect("")
    assert e.value.reason == "INVALID_NAME"
    with client.session(ttl=5) as s:
        with pytest.raises(raftlock.InvalidArgument) as e:
            s.lock("x" * 600)
        assert e.value.reason in ("INVALID_NAME", "TOO_LARGE")
        with pytest.raises(raftlock.InvalidArgument) as e:
            s.lock(prefix + "m", mode="sideways")
        assert e.value.field == "mode"
        with pytest.raises(raftlock.InvalidArgument):
            s.lock(prefix + "m", metadata={"k": 1})
        with pytest.raises(raftlock.InvalidArgument):
            s.lock(prefix + "m", wait=-1)
        with pytest.raises(raftlock.InvalidArgument):
            s.lock(prefix + "m", metadata={"k": "v" * 5000})
        with pytest.raises(raftlock.InvalidArgument):
            s.lock_many([])
        with pytest.raises(raftlock.InvalidArgument):
            s.semaphore(prefix + "m", permits=0)
        assert not s.holds(prefix + "m"), "a refused acquire leaves the name free"
    with pytest.raises(raftlock.InvalidArgument) as e:
        raftlock.Client(["not an endpoint"], use_env=False)
    assert e.value.reason == "INVALID_ENDPOINT"
    with pytest.raises(raftlock.InvalidArgument):
        raftlock.Client(client.endpoints, cert=str(tmp_path / "c.crt"), use_env=False)
    with pytest.raises(raftlock.InvalidArgument) as e:
        raftlock.Client(client.endpoints, ca=str(tmp_path / "missing.crt"), use_env=False)
    assert "missing.crt" in str(e.value)
    with pytest.raises(raftlock.InvalidArgument):
        raftlock.Client(client.endpoints, token="has space", use_env=False)
    with pytest.raises(raftlock.InvalidArgument):
        client.watch(from_revision=-1)


def test_a_node_that_is_down_is_skipped(cluster, prefix):
    # A dead address first: the client moves on to a live node.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    with raftlock.Client([dead] + cluster.endpoints, use_env=False) as c:
        with c.session(ttl=5) as session, session.lock(prefix + "skip"):
            assert c.current_endpoint != dead
    with raftlock.Client([dead], use_env=False, retry=raftlock.RetryPolicy.none()) as c:
        with pytest.raises(raftlock.Unavailable) as e:
            c.status()
        assert not e.value.may_have_been_applied


def test_an_attached_lease_is_valid_only_as_long_as_the_cluster_says(client):
    lease = client.grant_lease(2.0, owner="elsewhere")
    # The caller overstates the ttl: the cluster's answers decide.
    s = client.attach_session(lease, 60.0)
    try:
        assert s.is_valid() and s.remaining() <= 2.0
        s.pause_keep_alives()
        assert s.lost.wait(5), "lost within the real ttl, not the guessed one"
    finally:
        s.close()
    assert lease in [l.lease_id for l in client.leases()] or True  # not revoked by close
    with pytest.raises(raftlock.LeaseLost):
        client.attach_session(999_999_999, 2.0)


def test_a_shorter_ttl_shortens_the_validity_at_once(client, prefix):
    with client.session(ttl=30) as s, s.lock(prefix + "short") as g:
        assert g.remaining() > 20
        g.extend(ttl=3)
        assert s.ttl == 3 and g.remaining() <= 3
        time.sleep(1.5)  # keep-alives (every ttl/3) keep it going
        assert g.is_valid() and g.remaining() <= 3


def test_releasing_several_names_after_one_was_force_released_frees_the_others(client, prefix):
    a, b = prefix + "a", prefix + "b"
    with client.session(ttl=10) as s:
        g = s.lock_many([a, b])
        client.force_release(a)
        with pytest.raises(raftlock.NotHolder):
            g.release()
        deadline = time.monotonic() + 10
        while client.inspect(b) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.inspect(b) is None, "the session released what was left"
        s.lock(b, wait=5).release()  # and the name is usable again


def test_a_guard_dropped_without_release_is_released(client, prefix):
    import gc

    name = prefix + "dropped"
    with client.session(ttl=10) as s:
        s.lock(name)  # the guard is dropped at once
        gc.collect()
        deadline = time.monotonic() + 10
        while client.inspect(name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.inspect(name) is None
    client.lock(name, ttl=5)  # a one-off: its lease is revoked too
    gc.collect()
    deadline = time.monotonic() + 10
    while client.inspect(name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.inspect(name) is None


def test_grpc_failures_are_classified_by_what_they_mean():
    import grpc

    from raftlock import _common as c

    U = grpc.StatusCode.UNAVAILABLE
    # A name that does not resolve sent nothing, even when it says "tls".
    f = c.classify(U, "DNS resolution failed for tls-node-1.example:7401: errors resolving", None)
    assert (f.tls, f.applied, f.retry) == (False, c.Applied.NO, c.Retry.AFTER_PAUSE)
    f = c.classify(U, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused", None)
    assert (f.tls, f.applied) == (False, c.Applied.NO)
    for tls in (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:7401: Ssl handshake failed",
        "Custom verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed.",
    ):
        assert c.classify(U, tls, None).tls, tls
    # A connection cut with the request sent: maybe applied, retried if idempotent.
    f = c.classify(U, "Socket closed", None)
    assert (f.applied, f.retry) == (c.Applied.UNKNOWN, c.Retry.IF_IDEMPOTENT)
    # A reason from a newer node: maybe applied, never retried.
    f = c.classify(grpc.StatusCode.FAILED_PRECONDITION, "x", (("raftlock-reason", "SOMETHING_NEW"),))
    assert (f.applied, f.retry) == (c.Applied.UNKNOWN, c.Retry.NEVER)
    assert isinstance(f.error(), raftlock.InternalError) and f.error().may_have_been_applied
