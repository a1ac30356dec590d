"""How attempts are counted against ``RetryPolicy.max_attempts`` (no
cluster: the bookkeeping of ``_common.Attempts`` on classified failures)."""

from __future__ import annotations

import grpc

from raftlock._common import Applied, Attempts, Failure, Retry, RetryPolicy


def _failure(retry: Retry, leader: str | None = None) -> Failure:
    return Failure(
        reason="NOT_LEADER" if retry == Retry.AT_LEADER else None,
        code=grpc.StatusCode.UNAVAILABLE,
        message="test",
        metadata={},
        applied=Applied.NO,
        retry=retry,
        leader_addr=leader,
    )


def _policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_backoff=0.01, max_backoff=0.01, jitter=0.0)


def test_an_answer_naming_the_leader_is_followed_at_once_and_not_counted() -> None:
    # A failover: a follower names the dead leader (followed at once, free),
    # the dead leader refuses the connection (counted, then a pause).
    att = Attempts(_policy(3), idempotent=True)
    for _ in range(2):
        err, pause, leader = att.failed(_failure(Retry.AT_LEADER, "127.0.0.1:9"))
        assert err is None and pause == 0.0 and leader == "127.0.0.1:9"
        err, pause, leader = att.failed(_failure(Retry.AFTER_PAUSE))
        assert err is None and pause > 0.0
    assert att.counted == 2
    err, _, _ = att.failed(_failure(Retry.AT_LEADER, "127.0.0.1:9"))
    assert err is None, "a third redirect is still free"
    err, _, _ = att.failed(_failure(Retry.AFTER_PAUSE))
    assert err is not None, "the third counted attempt uses the policy up"


def test_nodes_naming_each_other_still_use_attempts_up() -> None:
    att = Attempts(_policy(3), idempotent=True)
    outcomes = [att.failed(_failure(Retry.AT_LEADER, f"127.0.0.1:{i % 2 + 1}"))[0] for i in range(4)]
    # The first redirect is free; each one after it went to a named leader.
    assert outcomes[:3] == [None, None, None]
    assert outcomes[3] is not None


def test_the_standard_policy_pauses_about_two_seconds_in_all() -> None:
    p = RetryPolicy.standard()
    assert (p.max_attempts, p.initial_backoff, p.max_backoff) == (8, 0.05, 0.4)
    no_jitter = RetryPolicy(p.max_attempts, p.initial_backoff, p.max_backoff, 0.0)
    total = sum(no_jitter.backoff(n) for n in range(1, p.max_attempts))
    assert abs(total - 1.95) < 1e-9
