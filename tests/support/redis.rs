//! Runs Debian's redis-server (installed by .ci/run) on a free loopback port, with its data in a temporary folder so
//! a stop and restart keeps the sessions (it saves on shutdown).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// `redis-cli -p <port> <args>`: its output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn binary() -> Option<&'static str> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

impl Redis {
    pub async fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            child: None,
            dir,
            port: super::free_port(),
        };
        r.start_again().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli -p <port> <args>`: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// How many `SET` commands the server has run (`INFO commandstats`).
    pub fn set_calls(&self) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Starts the server (again) on the same port and data folder.
    pub async fn start_again(&mut self) {
        let bin = binary().expect("redis-server is not installed (apt-get install redis-server; .ci/run does this)");
        let child = Command::new(bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "3600 1",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        super::wait_for_port(self.port).await;
    }

    /// Stops the server the way an orchestrator does (SIGTERM: it saves, then exits), waiting for it, bounded.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not stop");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One more redis-server of a cluster or a Sentinel setup, on a free port with its own folder; killed on drop.
pub struct RedisNode {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl RedisNode {
    /// A server with `extra` arguments (`--cluster-enabled yes`, `--replicaof ...`), nothing saved to disk.
    pub async fn start(extra: &[String]) -> RedisNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let bin = binary().expect("redis-server is not installed (apt-get install redis-server; .ci/run does this)");
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        super::wait_for_port(port).await;
        RedisNode {
            child: Some(child),
            dir,
            port,
        }
    }

    /// A replica of `master`, returned once its first synchronisation is done (`master_link_status:up`), so that
    /// what the master holds from then on reaches it as it is written. Redis 7 delays a diskless synchronisation by
    /// 5 s for more replicas to join (`repl-diskless-sync-delay`): start the master with it at 0.
    pub async fn replica_of(master: &RedisNode) -> RedisNode {
        let replica = RedisNode::start(&["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()]).await;
        super::eventually("the replica's first synchronisation", || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        })
        .await;
        replica
    }

    /// A Sentinel watching `master` (on `master_port`) as `name`, quick to declare it down (1 s) and fail over.
    pub async fn sentinel(name: &str, master_port: u16) -> RedisNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 3000\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let bin = binary().expect("redis-server is not installed");
        let child = Command::new(bin)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis sentinel");
        super::wait_for_port(port).await;
        RedisNode {
            child: Some(child),
            dir,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli -p <port> <args>`: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = &self.dir;
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters in a cluster (no replicas), ready for clients.
pub async fn cluster() -> Vec<RedisNode> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            RedisNode::start(&[
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ])
            .await,
        );
    }
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(status.success(), "redis-cli --cluster create failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !nodes
        .iter()
        .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    {
        assert!(std::time::Instant::now() < deadline, "the cluster did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
}
