"""raftlock.aio against a real 3-node cluster (the ``cluster`` fixture).

Each test is a plain function running one coroutine with ``asyncio.run``,
bounded by ``asyncio.wait_for``; every wait inside is bounded too. The
cluster is shared, so every test uses lock names under a prefix of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import grpc
import grpc.aio
import pytest

import raftlock
import raftlock.aio as rla
from raftlock.aio import Mode

T = TypeVar("T")

TEST_TIMEOUT_S = 60.0


def run(body: Callable[[], Awaitable[T]], timeout: float = TEST_TIMEOUT_S) -> T:
    """Run ``body()`` on a new event loop, failing after ``timeout`` s."""

    async def main() -> T:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(main())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() >= end:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def start(aw: Awaitable[T]) -> T:
    return await aw


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """Lock names of this test: ``aio-<test>-<random>/``."""
    return f"aio-{request.node.name}-{uuid.uuid4().hex[:8]}/"


def test_session_lock_token_remaining_extend(cluster: Any, prefix: str) -> None:
    name = prefix + "a"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=5, owner="aio-test") as s:
                assert s.is_valid() and 4.0 < s.remaining() <= 5.0
                assert s.valid_until() is not None and s.ttl == 5.0
                async with s.lock(name, wait=5, reason="nightly", metadata={"k": "v"}) as g:
                    assert g.token > 0 and g.names == (name,) and g.name == name
                    assert g.mode == Mode.EXCLUSIVE and not g.retry and g.revision >= g.token
                    assert g.is_valid() and 0.0 < g.remaining() <= 5.0
                    assert s.holds(name)
                    info = await client.inspect(name)
                    assert info is not None and len(info.holders) == 1
                    h = info.holders[0]
                    assert (h.lease_id, h.token, h.owner, h.reason, h.metadata) == (
                        s.lease_id,
                        g.token,
                        "aio-test",
                        "nightly",
                        {"k": "v"},
                    )
                    await asyncio.sleep(0.2)
                    before = g.remaining()
                    assert await g.extend() == 1
                    assert g.remaining() >= before
                    assert await g.extend(ttl=6) == 2
                    assert s.ttl == 6.0
                    info = await client.inspect(name)
                    assert info is not None and info.holders[0].extensions == 2
                    lease = await s.info()
                    assert lease is not None and lease.holds == [name] and lease.ttl == 6.0
                assert g.released and not g.is_valid() and g.remaining() == 0.0
                assert not s.holds(name)
                assert await client.inspect(name) is None
                await g.release()  # idempotent
                with pytest.raises(raftlock.NotHolder):
                    await g.extend()
                # The awaitable forms.
                g2 = await s.lock(name, wait=5)
                assert g2.token > g.token
                await g2.release()
                assert await client.inspect(name) is None
            assert s.ended.is_set() and not s.lost.is_set() and not s.is_valid()
            assert all(lease.lease_id != s.lease_id for lease in await client.leases())
            s3 = await client.session(ttl=5)
            try:
                assert s3.is_valid()
            finally:
                await s3.close()
            assert s3.ended.is_set()
            await s3.close()  # twice: nothing more

    run(body)


def test_busy_wait_timeout_and_granted_wait(cluster: Any, prefix: str) -> None:
    name = prefix + "a"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10) as s1, client.session(ttl=10) as s2:
                g1 = await s1.lock(name)
                with pytest.raises(raftlock.LockBusy) as busy:
                    await s2.try_lock(name)
                assert busy.value.reason == "LOCK_BUSY" and not busy.value.may_have_been_applied
                t0 = time.monotonic()
                with pytest.raises(raftlock.WaitTimeout):
                    await s2.lock(name, wait=0.5)
                assert 0.4 <= time.monotonic() - t0 < 5.0
                assert not s2.holds(name)
                info = await client.inspect(name)
                assert info is not None and info.queue == []
                # A deadline shorter than the wait: the server's WaitTimeout,
                # in time.
                t0 = time.monotonic()
                with pytest.raises(raftlock.WaitTimeout):
                    await s2.lock(name, wait=30, deadline=0.8)
                assert time.monotonic() - t0 < 3.0
                # A wait granted when the holder releases.
                waiting = asyncio.ensure_future(s2.lock(name, wait=10))
                await eventually(
                    lambda: _queued(client, name, s2.lease_id), what="s2 queued behind s1"
                )
                await g1.release()
                g2 = await asyncio.wait_for(waiting, 10)
                assert g2.token > g1.token and g2.waited > 0
                await g2.release()

    run(body)


async def _queued(client: rla.Client, name: str, lease_id: int) -> bool:
    info = await client.inspect(name)
    return info is not None and any(q.lease_id == lease_id for q in info.queue)


def test_already_held(cluster: Any, prefix: str) -> None:
    a, b = prefix + "a", prefix + "b"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10) as s:
                async with s.lock(a) as g:
                    with pytest.raises(raftlock.AlreadyHeld) as e:
                        await s.lock(a)
                    assert e.value.reason == "ALREADY_HELD" and e.value.metadata["name"] == a
                    with pytest.raises(raftlock.AlreadyHeld):
                        await s.lock_many([b, a])
                    with pytest.raises(raftlock.AlreadyHeld):
                        await s.read_lock(a)
                    assert s.holds(a) and not s.holds(b)
                    info = await client.inspect(a)
                    assert info is not None and [h.token for h in info.holders] == [g.token]
                    assert await client.inspect(b) is None  # lock_many sent nothing
                # Two tasks of one session racing for one name: one guard.
                results = await asyncio.gather(s.lock(b, wait=1), s.lock(b, wait=1), return_exceptions=True)
                guards = [r for r in results if isinstance(r, rla.LockGuard)]
                refused = [r for r in results if isinstance(r, raftlock.AlreadyHeld)]
                assert len(guards) == 1 and len(refused) == 1, results
                await guards[0].release()
                # Free again on the session.
                async with s.lock(a) as g2:
                    assert g2.token > g.token

    run(body)


def test_lost_when_keep_alives_pause(cluster: Any, prefix: str) -> None:
    name = prefix + "a"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            s1 = await client.session(ttl=2)
            s2 = await client.session(ttl=10)
            try:
                g1 = await s1.lock(name)
                lost_at: List[float] = []
                async_calls: List[rla.Session] = []

                async def on_lost_async(session: rla.Session) -> None:
                    async_calls.append(session)

                s1.on_lost(lambda session: lost_at.append(time.monotonic()))
                s1.on_lost(on_lost_async)
                waiting = asyncio.ensure_future(s2.lock(name, wait=15))
                await eventually(lambda: _queued(client, name, s2.lease_id), what="s2 queued")
                s1.pause_keep_alives()
                g2 = await asyncio.wait_for(waiting, 15)
                got_at = time.monotonic()
                # The loser knew first.
                assert s1.lost.is_set() and g1.lost.is_set() and s1.ended.is_set()
                assert lost_at and lost_at[0] <= got_at
                assert not s1.is_valid() and not g1.is_valid() and g1.remaining() == 0.0
                assert s1.valid_until() is None
                assert g2.token > g1.token
                await asyncio.sleep(0)  # the async callback's task
                assert async_calls == [s1]
                later: List[rla.Session] = []
                s1.on_lost(later.append)  # already lost: called at once
                assert later == [s1]
                with pytest.raises(raftlock.LeaseLost):
                    await g1.release()
                with pytest.raises(raftlock.LeaseLost):
                    await s1.lock(prefix + "other")
                await g2.release()
            finally:
                await s1.close()
                await s2.close()

    run(body)


def test_lost_locally_is_revoked(cluster: Any, prefix: str) -> None:
    name = prefix + "a"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            # A drift margin this large closes the validity window 0.5 s
            # after each keep-alive's send, before the next one (every
            # ttl/3) and long before the cluster's 3 s: lost here, alive
            # there.
            s = await client.session(ttl=3, drift_margin=2.5)
            try:
                g = await s.lock(name, wait=0)
                t0 = time.monotonic()
                await asyncio.wait_for(s.lost.wait(), 2)
                assert not g.is_valid() and not s.is_valid()

                async def freed() -> bool:
                    return await client.inspect(name) is None

                # Revoked at once, not left to expire after the ttl.
                await eventually(freed, timeout=2, what="the lost session's lock freed by a revoke")
                assert time.monotonic() - t0 < 2.5
                assert all(lease.lease_id != s.lease_id for lease in await client.leases())
            finally:
                await s.close()

    run(body)


def test_shared_semaphore_lock_many(cluster: Any, prefix: str) -> None:
    rw, sem = prefix + "rw", prefix + "sem"
    a, b, cfg, d = prefix + "m/a", prefix + "m/b", prefix + "m/cfg", prefix + "m/d"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10) as s1, client.session(ttl=10) as s2, client.session(ttl=10) as s3:
                # Shared: readers together, a writer refused.
                r1 = await s1.read_lock(rw)
                r2 = await rla.RwLock(s2, rw).read(wait=1)
                assert r1.mode == Mode.SHARED and r2.mode == Mode.SHARED and r1.token != r2.token
                with pytest.raises(raftlock.LockBusy):
                    await s3.write_lock(rw, wait=0)
                with pytest.raises(raftlock.WaitTimeout):
                    await rla.RwLock(s3, rw).write(wait=0.3)
                info = await client.inspect(rw)
                assert info is not None and {h.lease_id for h in info.holders} == {s1.lease_id, s2.lease_id}
                await r1.release()
                await r2.release()

                # Semaphore: two places.
                p1 = await rla.Semaphore(s1, sem, 2).acquire(wait=1)
                p2 = await s2.semaphore(sem, 2, wait=1)
                assert p1.mode == Mode.SEMAPHORE and p1.holds[0].permits == 2
                slots = rla.Semaphore(s3, sem, 2)
                assert await slots.available() == 0
                with pytest.raises(raftlock.LockBusy):
                    await slots.acquire(wait=0)
                with pytest.raises(raftlock.Conflict):
                    await s3.semaphore(sem, 3, wait=0)
                await p1.release()
                assert await slots.available() == 1
                async with slots.acquire(wait=1) as p3:
                    assert p3.token > p2.token
                await p2.release()

                # Several at once, one token, all or none.
                async with s1.lock_many([b, a, cfg], modes={cfg: "shared"}, wait=1) as g:
                    assert g.names == tuple(sorted([a, b, cfg]))
                    assert {h.name: h.mode for h in g.holds} == {a: Mode.EXCLUSIVE, b: Mode.EXCLUSIVE, cfg: Mode.SHARED}
                    assert all(h.token == g.token for h in g.holds)
                    for n in (a, b, cfg):
                        info = await client.inspect(n)
                        assert info is not None and info.holders[0].token == g.token
                    with pytest.raises(raftlock.LockBusy):
                        await s2.lock_many([d, b], wait=0)
                    assert await client.inspect(d) is None  # nothing of it held
                    async with s2.read_lock(cfg, wait=1):  # shared beside shared
                        pass
                for n in (a, b, cfg):
                    assert await client.inspect(n) is None

    run(body)


class _BrokenStream:
    """Stands in for a watch stream that broke (a node went away)."""

    async def read(self) -> Any:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "test: connection reset"
        )

    def cancel(self) -> bool:
        return False


def test_inspect_list_watch_resuming(cluster: Any, prefix: str) -> None:
    names = [prefix + n for n in ("c", "a", "b")]

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10) as s:
                async with client.watch(prefix) as w:
                    # Entered: anchored at the current revision, so what
                    # happens before the first read is delivered.
                    guards = [await s.lock(n) for n in names]
                    infos = await client.list(prefix)
                    assert [i.name for i in infos] == sorted(names)
                    assert [i.name async for i in client.iter_locks(prefix, page_size=1)] == sorted(names)
                    assert all(i.holders[0].lease_id == s.lease_id for i in infos)
                    assert await client.list(prefix + "zzz") == []
                    info = await client.inspect(names[1])
                    assert info is not None and info.revision >= guards[1].token
                    assert info.kind == "read_write" and info.max_token == guards[1].token

                    seen = [await asyncio.wait_for(w.__anext__(), 5) for _ in names]
                    assert [(e.type, e.name, e.token) for e in seen] == [
                        ("acquired", g.name, g.token) for g in guards
                    ]
                    assert w.last_revision == seen[-1].revision

                    # The stream breaks; meanwhile locks are released. The
                    # watch reopens after the last revision it delivered:
                    # nothing lost, nothing twice.
                    assert w._call is not None
                    w._call.cancel()
                    w._call = _BrokenStream()
                    for g in guards:
                        await g.release()
                    more = [await asyncio.wait_for(w.__anext__(), 10) for _ in guards]
                    assert [(e.type, e.name, e.token) for e in more] == [("released", g.name, g.token) for g in guards]
                    assert more[0].revision > seen[-1].revision

                    # A new watch from a revision resumes there.
                    async with client.watch(prefix, from_revision=seen[-1].revision + 1) as again:
                        replay = [await asyncio.wait_for(again.__anext__(), 5) for _ in guards]
                    assert [e.revision for e in replay] == [e.revision for e in more]

                # Closed: the iterator ends.
                with pytest.raises(StopAsyncIteration):
                    await w.__anext__()

                # close() from another task ends a waiting iteration.
                w2 = client.watch(prefix)

                async def drain() -> int:
                    return len([e async for e in w2])

                draining = asyncio.ensure_future(drain())
                await asyncio.sleep(0.3)
                await w2.close()
                assert await asyncio.wait_for(draining, 5) == 0

    run(body)


def test_election(cluster: Any, prefix: str) -> None:
    name = prefix + "leader"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10, owner="cand-a") as s1, client.session(ttl=10, owner="cand-b") as s2:
                e1, e2 = rla.Election(s1, name), rla.Election(s2, name)
                assert await e1.leader() is None
                term1 = await e1.campaign("10.0.0.1:80", wait=1)
                leader = await e2.leader()
                assert leader == rla.Leader("10.0.0.1:80", "cand-a", s1.lease_id, term1.token)

                changes = e2.observe()
                assert await asyncio.wait_for(changes.__anext__(), 5) == leader
                campaigning = asyncio.ensure_future(e2.campaign("10.0.0.2:80", wait=15))
                await eventually(lambda: _queued(client, name, s2.lease_id), what="b in line")
                await term1.release()  # resign
                term2 = await asyncio.wait_for(campaigning, 10)
                assert term2.token > term1.token
                # observe() may see the moment without a leader first.
                seen: List[Optional[rla.Leader]] = []
                while not seen or seen[-1] is None:
                    seen.append(await asyncio.wait_for(changes.__anext__(), 5))
                assert seen[-1] == rla.Leader("10.0.0.2:80", "cand-b", s2.lease_id, term2.token)
                await changes.aclose()
                await term2.release()
                assert await e1.leader() is None

    run(body)


def test_cancelled_acquire_leaves_nothing_behind(cluster: Any, prefix: str) -> None:
    name, other = prefix + "a", prefix + "b"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=10) as s1, client.session(ttl=10) as s2:
                g1 = await s1.lock(name)
                waiting = asyncio.ensure_future(s2.lock(name, wait=30))
                await eventually(lambda: _queued(client, name, s2.lease_id), what="s2 queued")
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(waiting, 5)
                assert not s2.holds(name)

                async def withdrawn() -> bool:
                    # The session's cleanup is over (its probe acquire may
                    # queue for a moment while it runs) and nothing is left.
                    if s2._names:
                        return False
                    info = await client.inspect(name)
                    return info is not None and info.queue == [] and [h.lease_id for h in info.holders] == [s1.lease_id]

                await eventually(withdrawn, what="s2's queued request withdrawn")
                lease = await s2.info()
                assert lease is not None and lease.waits == [] and lease.holds == []
                await g1.release()
                await asyncio.sleep(0.3)
                assert await client.inspect(name) is None  # nobody was granted it
                # The name is free on s2 again (the cleanup let go of it).
                async with s2.lock(name, wait=5) as g2:
                    assert g2.token > g1.token

                # Cancelled inside `async with`: released on the way out.
                entered = asyncio.Event()

                async def hold() -> None:
                    async with s1.lock(other, wait=5):
                        entered.set()
                        await asyncio.sleep(30)

                holding = asyncio.ensure_future(hold())
                await asyncio.wait_for(entered.wait(), 5)
                holding.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(holding, 5)
                assert await client.inspect(other) is None and not s1.holds(other)

                # wait_for's timeout cancels an acquire in the queue the same way.
                g3 = await s1.lock(name)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(start(s2.lock(name, wait=30)), 0.5)

                async def gone() -> bool:
                    if s2._names:  # the cleanup is still at work
                        return False
                    info = await client.inspect(name)
                    return info is not None and info.queue == []

                await eventually(gone, what="the timed-out acquire withdrawn")
                await g3.release()

    run(body)


def test_one_off_locks_and_decorators(cluster: Any, prefix: str) -> None:
    name = prefix + "job"

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            g = await client.lock(name, ttl=5, owner="one-off", wait=1, reason="r")
            info = await client.inspect(name)
            assert info is not None and info.holders[0].owner == "one-off" and info.holders[0].token == g.token
            lease_id = g.session.lease_id
            await g.release()
            assert g.session.ended.is_set()
            assert all(lease.lease_id != lease_id for lease in await client.leases())
            assert await client.inspect(name) is None

            async with client.lock(name, wait=1) as g2:
                assert g2.token > g.token
                with pytest.raises(raftlock.LockBusy):
                    async with client.lock(name, wait=0):
                        pass
            assert await client.inspect(name) is None

            calls: List[int] = []

            @client.locked(name, wait=5)
            async def job(x: int) -> int:
                info = await client.inspect(name)
                assert info is not None and len(info.holders) == 1
                calls.append(x)
                return x * 2

            assert list(await asyncio.gather(job(1), job(2))) == [2, 4]  # one at a time, each its lease
            assert sorted(calls) == [1, 2] and await client.inspect(name) is None

            async with client.session(ttl=5) as s:

                @s.locked(name)
                async def on_session() -> Optional[int]:
                    info = await client.inspect(name)
                    return info.holders[0].lease_id if info else None

                assert await on_session() == s.lease_id

                @rla.locked(name, session=s)
                async def via_module() -> bool:
                    return s.holds(name)

                assert await via_module()

            @rla.locked(name, client=client, wait=1)
            async def via_client() -> str:
                return "ok"

            assert await via_client() == "ok"

            with pytest.raises(TypeError):

                @client.locked(name)
                def not_async() -> None:  # pragma: no cover
                    pass

            pending = client.lock(name, wait=1)
            g3 = await pending
            with pytest.raises(RuntimeError):
                await pending  # used once
            await g3.release()

    run(body)


def test_attach_admin_and_leader_following(cluster: Any, prefix: str) -> None:
    name = prefix + "a"

    async def body() -> None:
        # A follower first: the client moves to the leader its reply names.
        async with rla.Client(list(reversed(cluster.endpoints))) as client:
            st = await client.status()
            assert st.leader_addr
            await client.inspect(name)
            assert client.current_endpoint == st.leader_addr

            lease_id = await client.grant_lease(2, "elsewhere")
            s = await client.attach_session(lease_id, 2)
            try:
                await asyncio.sleep(2.5)  # longer than the ttl: kept alive
                assert s.is_valid()
                async with s.lock(name) as g:
                    removed = await client.force_release(name)
                    assert [h.token for h in removed] == [g.token]
                    with pytest.raises(raftlock.NotHolder):
                        await g.release()
            finally:
                await s.close()  # attached: not revoked
            assert any(lease.lease_id == lease_id for lease in await client.leases())
            released = await client.revoke_lease(lease_id)
            assert released == []
            assert all(lease.lease_id != lease_id for lease in await client.leases())

            t0 = time.monotonic()
            with pytest.raises(raftlock.LeaseLost):
                await client.attach_session(lease_id, 5)
            assert time.monotonic() - t0 < 4.0  # told at once, not after a ttl

            assert await client.snapshot() > 0

    run(body)


def test_bad_input(cluster: Any, prefix: str) -> None:
    with pytest.raises(raftlock.InvalidArgument):
        rla.Client(["no-port"], use_env=False)
    with pytest.raises(raftlock.InvalidArgument):
        rla.Client([], use_env=False)
    with pytest.raises(raftlock.InvalidArgument):
        rla.Client(cluster.endpoints, call_timeout=0)
    with pytest.raises(raftlock.InvalidArgument):
        rla.Client(cluster.endpoints, cert="/nonexistent.crt")  # without its key

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            with pytest.raises(raftlock.InvalidArgument) as e:
                await client.session(ttl=0.5)
            assert e.value.reason == "TTL_OUT_OF_RANGE"
            with pytest.raises(raftlock.InvalidArgument):
                await client.session(ttl=5, drift_margin=6)
            with pytest.raises(raftlock.InvalidArgument):
                await client.list(page_size=0)
            with pytest.raises(raftlock.InvalidArgument):
                client.watch(from_revision=-1)
            with pytest.raises(raftlock.InvalidArgument):
                await client.inspect("bad\x00name")
            with pytest.raises(raftlock.InvalidArgument):
                await client.inspect("", timeout=0)
            async with client.session(ttl=5) as s:
                bad: List[Callable[[], Awaitable[Any]]] = [
                    lambda: s.lock(""),  # the server's INVALID_NAME
                    lambda: s.lock(prefix + "x" * 600),
                    lambda: s.lock(prefix + "a", mode="bogus"),
                    lambda: s.lock(prefix + "a", wait=-1),
                    lambda: s.lock(prefix + "a", deadline=0),
                    lambda: s.lock(prefix + "a", metadata={"k": 1}),  # type: ignore[dict-item]
                    lambda: s.lock(prefix + "a", reason=3),  # type: ignore[arg-type]
                    lambda: s.semaphore(prefix + "a", "2"),  # type: ignore[arg-type]
                    lambda: s.semaphore(prefix + "a", 0),  # the server's
                    lambda: s.lock_many([]),
                    lambda: s.lock_many(prefix + "a"),  # a str, not a list
                    lambda: s.lock_many([prefix + "a", 3]),  # type: ignore[list-item]
                ]
                for make in bad:
                    with pytest.raises(raftlock.InvalidArgument):
                        await make()
                with pytest.raises(raftlock.InvalidArgument):
                    rla.Semaphore(s, prefix + "a", 0)
                assert not s.holds(prefix + "a") and s.is_valid()
                assert await client.list(prefix) == []

    run(body)


@pytest.fixture
def killable_cluster(request: pytest.FixtureRequest) -> Any:
    """A cluster whose nodes this test may kill: a ``fresh_cluster()`` when
    the conftest has that factory (its ``cluster`` is then shared), else
    ``cluster``."""
    try:
        factory = request.getfixturevalue("fresh_cluster")
    except pytest.FixtureLookupError:
        return request.getfixturevalue("cluster")
    return factory()


def test_session_and_watch_survive_leader_kill(killable_cluster: Any, prefix: str) -> None:
    cluster = killable_cluster
    name = prefix + "a"
    leader = cluster.leader_id()

    async def body() -> None:
        async with rla.Client(cluster.endpoints) as client:
            async with client.session(ttl=3) as s, client.watch(prefix) as w:
                g = await s.lock(name)
                assert (await asyncio.wait_for(w.__anext__(), 5)).type == "acquired"
                await asyncio.get_running_loop().run_in_executor(None, cluster.kill, leader)
                # Two ttls across the election: the keep-alives moved on.
                await asyncio.sleep(6)
                assert s.is_valid() and not s.lost.is_set()
                info = await client.inspect(name)
                assert info is not None and info.holders[0].token == g.token
                assert await g.extend() == 1
                await g.release()
                # The watch reopened elsewhere, after what it had delivered.
                ev = await asyncio.wait_for(w.__anext__(), 10)
                assert (ev.type, ev.name, ev.token) == ("released", name, g.token)
                st = await client.status()
                assert st.leader_id != leader and client.current_endpoint == st.leader_addr
        await asyncio.get_running_loop().run_in_executor(None, cluster.start, leader)

    run(body)
