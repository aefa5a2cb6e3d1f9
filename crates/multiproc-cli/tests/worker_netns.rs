//! Worker hosts on other "machines": `multiproc worker` in network namespaces of their own
//! (`ip netns`, each joined to this one by a veth pair), with a `redis-server` listening on
//! the host ends. Mid-map, one namespace's processes are SIGKILLed and another's link is
//! taken down; the map completes on the third, with every result exactly once.
//!
//! The test creates its namespaces and links and removes them (and every process in them)
//! when it ends. Where `ip netns` is not permitted (not root, no `ip`), it skips with a line
//! on stderr; under CI=true that is a failure. Every wait is bounded and waits for a state
//! the server shows (the consumers of the task group, what each holds).

#[path = "../../multiproc/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use multiproc::distributed::{Pool, Registry};

const BINARY: &str = "worker_netns";
/// The bound on any state the test waits for.
const STATE_DEADLINE: Duration = Duration::from_secs(60);
const NAME: &str = "hosts";

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn echo(s: String) -> String {
    s
}

/// The same names and types as the command's registry, so the same identity.
fn registry() -> Registry {
    Registry::new().task("square", square).task("sleep_ms", sleep_ms).task("echo", echo)
}

/// Runs `ip ARGS`; the error names the command and what it said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A network namespace joined to this one by a veth pair: `host` (here) and `peer`
/// (inside) on a /24 of its own. Dropping it kills every process in it and removes both.
struct Netns {
    name: String,
    veth: String,
    host: String,
    peer: String,
    children: Vec<Child>,
}

impl Netns {
    /// Namespace `index` of this test process.
    fn create(index: u8) -> Result<Netns, String> {
        let pid = std::process::id();
        let subnet = format!("10.{}.{}", 100 + pid % 100, (pid / 100 % 60) * 4 + u32::from(index));
        let ns = Netns {
            name: format!("mp-{pid}-{index}"),
            veth: format!("mp{pid}v{index}"),
            host: format!("{subnet}.1"),
            peer: format!("{subnet}.2"),
            children: Vec::new(),
        };
        let inner = format!("{}p", ns.veth);
        ip(&["netns", "add", &ns.name])?;
        // From here on, dropping `ns` undoes what was made.
        let setup = || -> Result<(), String> {
            ip(&["link", "add", &ns.veth, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns.name])?;
            ip(&["addr", "add", &format!("{}/24", ns.host), "dev", &ns.veth])?;
            ip(&["link", "set", &ns.veth, "up"])?;
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns.name, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            in_ns(&["addr", "add", &format!("{}/24", ns.peer), "dev", &inner])?;
            in_ns(&["link", "set", &inner, "up"])?;
            in_ns(&["link", "set", "lo", "up"])
        };
        let made = setup();
        made.map(|()| ns)
    }

    /// Starts `multiproc worker` inside, for the server at `host:port` of this side.
    fn start_worker(&mut self, port: u16) {
        let url = format!("redis://{}:{port}/0", self.host);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_multiproc"), "worker"])
            .args(["--redis", &url, "--name", NAME, "--processes", "2"])
            .args(["--visibility-timeout", "1"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run multiproc worker in a namespace");
        self.children.push(child);
    }

    /// The pids of the processes inside.
    fn pids(&self) -> Vec<u32> {
        let out = Command::new("ip").args(["netns", "pids", &self.name]).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }

    /// SIGKILLs every process inside and waits (bounded) until none is left.
    fn kill_all(&mut self) {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            for child in &mut self.children {
                let _ = child.try_wait();
            }
            assert!(Instant::now() < deadline, "processes in {} outlived SIGKILL", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }

    /// Takes the link down (from this side): the namespace is cut off.
    fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]).expect("take the link down");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Three namespaces, or `None` (after the skip line) where they cannot be made.
fn namespaces() -> Option<Vec<Netns>> {
    let made: Result<Vec<Netns>, String> = (0..3).map(Netns::create).collect();
    match made {
        Ok(all) => Some(all),
        Err(why) => {
            assert!(!common::python::in_ci(), "network namespaces are required in CI: {why}");
            common::python::terminal_line(&format!(
                "SKIPPED in {BINARY}: the multi-host tests, which need `ip netns` ({why}). \
                 Set CI=true to make this a failure."
            ));
            None
        }
    }
}

/// The consumers of the task group and how many tasks each holds, by the pid in their
/// names (`host-PID-nonce`).
fn holders(con: &mut redis::Connection) -> HashMap<u32, i64> {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{NAME}:tasks"))
        .arg("multiproc")
        .query(con)
        .unwrap_or(redis::Value::Nil);
    let mut out = HashMap::new();
    let redis::Value::Array(summary) = reply else { return out };
    let Some(redis::Value::Array(consumers)) = summary.get(3) else { return out };
    for c in consumers {
        let redis::Value::Array(pair) = c else { continue };
        let (Some(redis::Value::BulkString(name)), Some(count)) = (pair.first(), pair.get(1))
        else {
            continue;
        };
        let count = match count {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
            redis::Value::Int(n) => *n,
            _ => 0,
        };
        let name = String::from_utf8_lossy(name);
        if let Some(pid) = name.rsplit('-').nth(1).and_then(|p| p.parse().ok()) {
            out.insert(pid, count);
        }
    }
    out
}

/// Waits (bounded) until `check` holds; panics naming `what` otherwise.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_map_completes_when_one_host_is_killed_and_another_cut_off() {
    let Some(mut hosts) = namespaces() else { return };
    let mut addresses = vec!["127.0.0.1"];
    addresses.extend(hosts.iter().map(|h| h.host.as_str()));
    let Some(server) = RedisServer::start_binding(
        BINARY,
        "a_map_completes_when_one_host_is_killed_and_another_cut_off",
        &addresses,
    ) else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    for host in &mut hosts {
        host.start_worker(server.port());
    }
    let (killed, cut) = (0, 1);
    // Distinct durations, so that each result names its item.
    let items: Vec<u64> = (100..160).collect();
    let mut results =
        pool.chunksize(1).imap_unordered::<_, u64, _>("sleep_ms", items.clone()).unwrap();
    let holds = |con: &mut redis::Connection, host: &Netns| {
        let pids = host.pids();
        holders(con).iter().any(|(pid, n)| *n > 0 && pids.contains(pid))
    };
    wait_for("the hosts to hold tasks", || {
        holds(&mut con, &hosts[killed]) && holds(&mut con, &hosts[cut])
    });
    hosts[killed].kill_all();
    hosts[cut].cut();

    let mut got = Vec::new();
    for _ in 0..items.len() {
        got.push(results.next_timeout(STATE_DEADLINE).expect("a result").expect("a value"));
    }
    assert!(results.next_timeout(STATE_DEADLINE).is_none());
    got.sort_unstable();
    assert_eq!(got, items);
    drop(results);
    drop(pool);
    drop(hosts);
}
