//! The recipes against real in-process 3-node clusters.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::session;
use futures::StreamExt;
use raftlock_client::recipes::{
    Fenced, LeaderElection, RwLock, Semaphore, StaleToken, lock_many, with_locks,
};
use raftlock_client::{Client, ClientOptions, Error, Mode, SessionOptions};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;

/// Wait until `name` has `n` queued requests.
async fn queued(client: &Client, name: &str, n: usize) {
    bounded(async {
        loop {
            let q = client
                .inspect(name)
                .await
                .expect("inspect")
                .map_or(0, |l| l.queue.len());
            if q == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_many_is_all_or_none() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 5000, "a").await;
    let b = session(&client, 5000, "b").await;

    let busy = bounded(b.lock("many/2").try_acquire()).await.expect("b");
    // One name busy: nothing is held, not even the free ones.
    let e = bounded(a.lock_many(["many/1", "many/2", "many/3"]).try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    for n in ["many/1", "many/3"] {
        assert!(bounded(client.inspect(n)).await.expect("inspect").is_none());
    }
    let e = bounded(lock_many(
        &a,
        ["many/3", "many/2"],
        Duration::from_millis(300),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::WaitTimeout { .. }), "{e:?}");
    assert!(
        bounded(client.inspect("many/3"))
            .await
            .expect("i")
            .is_none()
    );

    // Waiting: granted all together once the busy one is released.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            lock_many(
                &a,
                ["many/3", "many/1", "many/2", "many/1"],
                Duration::from_secs(10),
            )
            .await
        })
    };
    queued(&client, "many/2", 1).await;
    assert!(
        bounded(client.inspect("many/1"))
            .await
            .expect("i")
            .is_some_and(|l| l.holders.is_empty())
    );
    bounded(busy.release()).await.expect("release");
    let all = bounded(waiter).await.expect("task").expect("all three");
    assert_eq!(
        all.names().collect::<Vec<_>>(),
        ["many/1", "many/2", "many/3"]
    );
    for n in ["many/1", "many/2", "many/3"] {
        let info = bounded(client.inspect(n)).await.expect("i").expect("held");
        assert_eq!(info.holders.len(), 1);
        assert_eq!(info.holders[0].token, all.token(), "one token for all");
    }
    // Mixed modes in one request; released all together.
    bounded(all.release()).await.expect("release all");
    let mixed = bounded(
        a.lock_many(["many/rows"])
            .with("many/config", Mode::Shared)
            .try_acquire(),
    )
    .await
    .expect("mixed");
    assert_eq!(
        mixed.holds(),
        [
            ("many/config".to_string(), Mode::Shared),
            ("many/rows".to_string(), Mode::Exclusive)
        ]
    );
    let reader = bounded(b.lock("many/config").mode(Mode::Shared).try_acquire())
        .await
        .expect("shared beside it");
    drop(reader);
    bounded(mixed.release()).await.expect("release");

    // with_locks runs the work under the locks and releases after.
    let token = bounded(with_locks(
        &a,
        ["many/w1", "many/w2"],
        Duration::from_secs(5),
        |t| {
            let client = client.clone();
            async move {
                let info = client.inspect("many/w2").await.expect("i").expect("held");
                assert_eq!(info.holders[0].token, t);
                t
            }
        },
    ))
    .await
    .expect("work ran");
    assert!(token > 0);
    assert!(
        bounded(client.inspect("many/w1"))
            .await
            .expect("i")
            .is_none()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_readers_share_the_writer_waits_and_later_readers_queue_behind_it() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s: Vec<_> = futures::future::join_all((0..4).map(|i| {
        let client = client.clone();
        async move { session(&client, 5000, &format!("s{i}")).await }
    }))
    .await;
    let rw: Vec<_> = s.iter().map(|s| RwLock::new(s, "rw/doc")).collect();

    let r0 = bounded(rw[0].read(Duration::from_secs(1)))
        .await
        .expect("r0");
    let r1 = bounded(rw[1].try_read()).await.expect("r1 shares");
    assert_eq!(
        bounded(rw[2].try_write()).await.unwrap_err().reason(),
        "LOCK_BUSY"
    );

    let order = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (rw, order) = (rw[2].clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let w = rw.write(Duration::from_secs(15)).await.expect("writer");
            order.lock().unwrap().push("writer");
            tokio::time::sleep(Duration::from_millis(200)).await;
            w.release().await.expect("release");
        })
    };
    queued(&client, "rw/doc", 1).await;
    // A reader arriving after the queued writer does not join the readers.
    assert_eq!(
        bounded(rw[3].try_read()).await.unwrap_err().reason(),
        "LOCK_BUSY"
    );
    let late_reader = {
        let (rw, order) = (rw[3].clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let r = rw.read(Duration::from_secs(15)).await.expect("late reader");
            order.lock().unwrap().push("late reader");
            r
        })
    };
    queued(&client, "rw/doc", 2).await;
    // The readers ahead of the writer keep reading while it waits; the
    // holders they saw stay exactly these two.
    let info = bounded(client.inspect("rw/doc"))
        .await
        .expect("i")
        .expect("held");
    assert_eq!(info.holders.len(), 2);
    bounded(r0.release()).await.expect("release r0");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(order.lock().unwrap().is_empty(), "the writer waits for r1");
    bounded(r1.release()).await.expect("release r1");
    bounded(writer).await.expect("writer task");
    let r3 = bounded(late_reader).await.expect("task");
    assert_eq!(*order.lock().unwrap(), ["writer", "late reader"]);
    drop(r3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_grants_exactly_its_permits() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s: Vec<_> = futures::future::join_all((0..4).map(|i| {
        let client = client.clone();
        async move { session(&client, 5000, &format!("p{i}")).await }
    }))
    .await;
    let sem: Vec<_> = s.iter().map(|s| Semaphore::new(s, "sem/pool", 3)).collect();
    assert_eq!(bounded(sem[0].available()).await.expect("available"), 3);
    let mut permits = Vec::new();
    for (i, sem) in sem.iter().take(3).enumerate() {
        permits.push(bounded(sem.try_acquire()).await.expect("a permit"));
        assert_eq!(
            bounded(sem.available()).await.expect("available"),
            2 - i as u32
        );
    }
    let e = bounded(sem[3].try_acquire()).await.unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    // Another count on the same name is refused.
    let e = bounded(Semaphore::new(&s[3], "sem/pool", 5).try_acquire())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "PERMITS_MISMATCH");
    let waiting = {
        let sem = sem[3].clone();
        tokio::spawn(async move { sem.acquire(Duration::from_secs(10)).await })
    };
    queued(&client, "sem/pool", 1).await;
    let first = permits.remove(0);
    bounded(first.release()).await.expect("release");
    let fourth = bounded(waiting).await.expect("task").expect("granted");
    assert_eq!(bounded(sem[0].available()).await.expect("available"), 0);
    let info = bounded(client.inspect("sem/pool"))
        .await
        .expect("i")
        .expect("held");
    assert_eq!(info.permits, 3);
    assert_eq!(info.holders.len(), 3);
    drop((fourth, permits));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_on_resign_revoke_and_drop_with_growing_tokens() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let observer_session = session(&client, 5000, "observer").await;
    let election = LeaderElection::new(&observer_session, "el/main");
    assert_eq!(bounded(election.leader()).await.expect("leader"), None);
    let changes = bounded(election.observe()).await.expect("observe");
    let mut changes = Box::pin(changes);
    assert_eq!(
        bounded(changes.next()).await.expect("first").expect("ok"),
        None
    );

    let candidates: Vec<_> = futures::future::join_all((0..4).map(|i| {
        let client = client.clone();
        async move { session(&client, 5000, &format!("node-{i}")).await }
    }))
    .await;
    let first = bounded(
        LeaderElection::new(&candidates[0], "el/main").campaign("10.0.0.1", Duration::from_secs(1)),
    )
    .await
    .expect("first leader");
    assert!(first.is_valid());
    let seen = bounded(changes.next())
        .await
        .expect("change")
        .expect("ok")
        .expect("a leader");
    assert_eq!(
        (seen.owner.as_str(), seen.value.as_str(), seen.token),
        ("node-0", "10.0.0.1", first.token())
    );

    // The others queue up in order.
    let mut waiting = Vec::new();
    for (i, s) in candidates.iter().enumerate().skip(1) {
        let e = LeaderElection::new(s, "el/main");
        let value = format!("10.0.0.{}", i + 1);
        waiting.push(tokio::spawn(async move {
            e.campaign(&value, Duration::from_secs(15)).await
        }));
        queued(&client, "el/main", i).await;
    }
    let e =
        bounded(LeaderElection::new(&observer_session, "el/main").campaign("x", Duration::ZERO))
            .await
            .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");

    // Resign → node-1; revoke its session → node-2; drop node-2's session → node-3.
    // The observer sees each leader in turn (perhaps with a `None` between).
    async fn next_leader<S>(changes: &mut S) -> raftlock_client::recipes::Leader
    where
        S: futures::Stream<Item = Result<Option<raftlock_client::recipes::Leader>, Error>> + Unpin,
    {
        bounded(async {
            loop {
                if let Some(l) = changes.next().await.expect("open").expect("ok") {
                    return l;
                }
            }
        })
        .await
    }
    let mut last = first.token();
    bounded(first.resign()).await.expect("resign");
    let mut tasks = waiting.into_iter();
    let second = bounded(tasks.next().expect("t"))
        .await
        .expect("task")
        .expect("leader 2");
    assert!(second.token() > last);
    last = second.token();
    let now = bounded(election.leader())
        .await
        .expect("leader")
        .expect("some");
    assert_eq!(
        (now.owner.as_str(), now.value.as_str()),
        ("node-1", "10.0.0.2")
    );
    assert_eq!(next_leader(&mut changes).await.owner, "node-1");

    bounded(candidates[1].revoke()).await.expect("revoke");
    assert!(!second.is_valid());
    let third = bounded(tasks.next().expect("t"))
        .await
        .expect("task")
        .expect("leader 3");
    assert!(third.token() > last);
    last = third.token();
    assert_eq!(next_leader(&mut changes).await.owner, "node-2");

    let mut candidates = candidates;
    let s2 = candidates.remove(2);
    drop(third);
    drop(s2);
    let fourth = bounded(tasks.next().expect("t"))
        .await
        .expect("task")
        .expect("leader 4");
    assert!(fourth.token() > last);
    assert_eq!(fourth.value(), "10.0.0.4");
    let seen = next_leader(&mut changes).await;
    assert_eq!(
        (seen.owner.as_str(), seen.token),
        ("node-3", fourth.token())
    );
    drop(fourth);
    cluster.shutdown().await;
}

/// The child process of the test below: campaigns, says when it leads, and
/// waits to be killed. Does nothing unless started by that test.
#[test]
#[ignore = "helper process for election_hands_over_when_the_leader_process_is_killed"]
fn election_candidate_process() {
    let Ok(endpoints) = std::env::var("RAFTLOCK_TEST_CANDIDATE_ENDPOINTS") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let client = Client::connect(endpoints.split(','), ClientOptions::default())
            .await
            .expect("connect");
        let s = client
            .session(SessionOptions::new(Duration::from_millis(1500)).owner("child"))
            .await
            .expect("session");
        let leadership = LeaderElection::new(&s, "el/kill")
            .campaign("child", Duration::from_secs(10))
            .await
            .expect("child leads");
        println!("LEADER {}", leadership.token());
        // Killed long before this ends.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_when_the_leader_process_is_killed() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let endpoints: Vec<String> = cluster.addrs.values().cloned().collect();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "recipes::election_candidate_process",
            "--ignored",
            "--nocapture",
        ])
        .env("RAFTLOCK_TEST_CANDIDATE_ENDPOINTS", endpoints.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the candidate process");
    let stdout = child.stdout.take().expect("stdout");
    let child_token = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.ok()?;
            if let Some(t) = line.strip_prefix("LEADER ") {
                return t.trim().parse::<u64>().ok();
            }
        }
        None
    });
    let child_token = tokio::time::timeout(Duration::from_secs(60), child_token)
        .await
        .ok()
        .and_then(|r| r.ok().flatten());
    let Some(child_token) = child_token else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the candidate process never led");
    };
    let s = session(&client, 5000, "parent").await;
    let election = LeaderElection::new(&s, "el/kill");
    let leader = bounded(election.leader())
        .await
        .expect("leader")
        .expect("the child");
    assert_eq!(
        (leader.owner.as_str(), leader.token),
        ("child", child_token)
    );
    let next = {
        let election = election.clone();
        tokio::spawn(async move { election.campaign("parent", Duration::from_secs(15)).await })
    };
    queued(&client, "el/kill", 1).await;

    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    let killed_at = Instant::now();
    let _ = child.wait();
    let leadership = bounded(next)
        .await
        .expect("task")
        .expect("the parent leads");
    assert!(leadership.token() > child_token);
    // The child's lease had to expire (ttl 1.5 s) for the hand-over.
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    let now = bounded(election.leader())
        .await
        .expect("leader")
        .expect("some");
    assert_eq!(now.owner, "parent");
    drop(leadership);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_resource_refuses_a_paused_holders_reads_and_writes() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 1000, "paused").await;
    let b = session(&client, 5000, "next").await;
    let store = Fenced::new(Vec::<String>::new());

    let ga = bounded(a.lock("fence/x").try_acquire()).await.expect("a");
    store
        .write(ga.token(), |v| v.push("a1".into()))
        .expect("a writes");
    // a freezes; its lease expires and b gets the lock.
    a.pause_keep_alives(true);
    let gb = bounded(b.lock("fence/x").wait(Duration::from_secs(10)).acquire())
        .await
        .expect("b");
    assert!(gb.token() > ga.token());
    store
        .write(gb.token(), |v| v.push("b1".into()))
        .expect("b writes");
    // a wakes up and tries to use what it still believes it holds.
    let stale = StaleToken {
        presented: ga.token(),
        highest: gb.token(),
    };
    assert_eq!(store.write(ga.token(), |v| v.push("a2".into())), Err(stale));
    assert_eq!(store.read(ga.token(), |v| v.len()), Err(stale));
    assert_eq!(
        store.read(gb.token(), |v| v.clone()),
        Ok(vec!["a1".to_string(), "b1".to_string()])
    );
    assert_eq!(store.highest(), gb.token());
    std::mem::forget(ga);
    drop(gb);
    cluster.shutdown().await;
}
