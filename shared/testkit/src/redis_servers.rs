//! Private Redis servers for tests that need to break Redis (FLUSHALL, a
//! restart) or a cluster, without touching the shared one.
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port at or below 45535 (a cluster bus adds 10000).
/// A port free just now; for a cluster node its bus port (the port +
/// 10000) too.
fn free_port(cluster: bool) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p <= 45535 && (!cluster || TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()) {
            return p;
        }
    }
}

/// Starts a redis-server on a free port and waits until it answers. A
/// port found free may be taken before the server binds it (another
/// test's connection, another server's bus port): a server that exits
/// is started again on another port, where before the test failed.
fn start_node(dir: &std::path::Path, cluster: bool, extra: &[&str]) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_port(cluster);
        let mut child = spawn_with(port, dir, cluster, extra);
        let mut exited = || matches!(child.try_wait(), Ok(Some(_)));
        let mut gone = false;
        wait_until("redis-server start", || {
            gone = exited();
            gone || cli(port, &["PING"]).trim() == "PONG"
        });
        // A PONG from a server of another test on the port: ours exited.
        if !gone && !exited() {
            return (port, child);
        }
    }
    panic!("redis-server did not start on five free ports");
}

fn spawn_with(port: u16, dir: &std::path::Path, cluster: bool, extra: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args([
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
    .arg(dir)
    // DEBUG RELOAD (RedisServer::back_to_save), from loopback only.
    .args(["--enable-debug-command", "local"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd.args(extra);
    if cluster {
        cmd.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
        ]);
    }
    cmd.spawn()
        .expect("redis-server is installed (make deps installs it)")
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `check` holds, polling: a readiness condition, not a timing.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not happen");
}

/// A standalone Redis on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = TempDir::new();
        let (port, child) = start_node(&dir.0, false, &[]);
        RedisServer {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a redis-cli command against it.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Takes the server back to what it last saved (`SAVE`), its clients
    /// still connected: it has none of the changes made since, as after
    /// a failover to a replica that lagged (which a cluster client follows
    /// without an error) or a restart from an older snapshot.
    pub fn back_to_save(&self) {
        assert_eq!(self.cli(&["DEBUG", "RELOAD", "NOSAVE"]).trim(), "OK");
    }

    /// A replica of this server, once it has synced; killed on drop (the
    /// server then has one replica fewer).
    pub fn replica(&self) -> RedisServer {
        let dir = TempDir::new();
        let master = self.port.to_string();
        // Sync at once, not after the 5 s a diskless sync waits for more
        // replicas by default.
        self.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
        let (port, child) = start_node(&dir.0, false, &["--replicaof", "127.0.0.1", &master]);
        wait_until("replica in sync", || {
            cli(port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        RedisServer {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-master Redis Cluster on loopback, killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with(0)
    }

    /// Three masters with `replicas` replicas each, in sync.
    pub fn start_with(replicas: usize) -> RedisCluster {
        let dir = TempDir::new();
        // Replicas sync at once, not after the 5 s a diskless sync waits
        // for more of them by default.
        let (ports, children): (Vec<u16>, Vec<Child>) = (0..3 * (1 + replicas))
            .map(|_| start_node(&dir.0, true, &["--repl-diskless-sync-delay", "0"]))
            .unzip();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &ports {
            wait_until("cluster state ok", || {
                cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
            wait_until("replica in sync", || {
                let info = cli(*p, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
        RedisCluster {
            ports,
            children,
            _dir: dir,
        }
    }

    /// Kills the replicas of the master that holds keys tagged `{tag}`.
    pub fn kill_replicas_of(&mut self, tag: &str) {
        let slot: u16 = cli(
            self.ports[0],
            &["CLUSTER", "KEYSLOT", &format!("{{{tag}}}")],
        )
        .trim()
        .parse()
        .expect("a slot");
        // `<id> <ip:port@bus> <flags> <master id or -> ... <slot ranges>`
        let nodes = cli(self.ports[0], &["CLUSTER", "NODES"]);
        let rows: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let holds = |ranges: &[&str]| {
            ranges.iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            })
        };
        let master: u16 = rows
            .iter()
            .find(|r| r.len() > 8 && r[2].contains("master") && holds(&r[8..]))
            .and_then(|r| r[1].split(['@', ':']).nth(1)?.parse().ok())
            .expect("a master holds the slot");
        // The master's own word (gossip may not have told every node yet):
        // `slave0:ip=127.0.0.1,port=<port>,state=online,...`
        let info = cli(master, &["INFO", "replication"]);
        let replicas = info
            .lines()
            .filter(|l| l.starts_with("slave"))
            .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("port=")))
            .filter_map(|p| p.parse::<u16>().ok());
        for port in replicas {
            let i = self
                .ports
                .iter()
                .position(|p| *p == port)
                .expect("our node");
            let _ = self.children[i].kill();
            let _ = self.children[i].wait();
        }
    }

    /// `OMS_REDIS_CLUSTER_NODES` for this cluster.
    pub fn nodes(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("oms-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
