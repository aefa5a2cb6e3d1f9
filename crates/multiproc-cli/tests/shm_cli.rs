//! `multiproc shm list|clean`: a child creates a block and is killed; `list` shows it
//! orphaned, `clean` removes it, and live blocks, kept blocks and foreign names survive;
//! a queued item whose producer exited survives `clean`. The tests clean with `--pid` only
//! (their children's and their own blocks): a machine-wide clean could remove what other
//! tests or programs still look at.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use multiproc::shared_memory::SharedMemory;
use multiproc::{pipe, Connection, Process};

fn multiproc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multiproc")).args(args).output().expect("run multiproc")
}

/// Runs `multiproc ARGS`, which must succeed, and returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = multiproc(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "multiproc {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(args: &[&str]) -> serde_json::Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed {stdout:?}: {e}"))
}

/// The `list --json` entry for `name`, if listed.
fn listed(name: &str) -> Option<serde_json::Value> {
    let all = json(&["shm", "list", "--json"]);
    all.as_array().expect("an array").iter().find(|b| b["name"] == name).cloned()
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

fn create_and_hang((conn,): (Connection,)) {
    let shm = SharedMemory::create(8192).unwrap();
    conn.send(&shm.name().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn list_and_clean_after_a_killed_creator() {
    let (mine, theirs) = pipe(true).unwrap();
    let child = Process::new(create_and_hang, (theirs,));
    child.start().unwrap();
    let orphan: String = mine.recv_timeout(Duration::from_secs(60)).unwrap();
    let child_pid = child.pid().unwrap();

    let live = SharedMemory::create(4096).unwrap();
    let kept = SharedMemory::builder().size(100).keep(true).create().unwrap();
    let foreign = SharedMemory::create_named(&format!("mp_cli_foreign_{child_pid}"), 8).unwrap();

    let entry = listed(&orphan).expect("the child's block is listed");
    assert_eq!(entry["owner_pid"], child_pid);
    assert_eq!(entry["size"], 8192);
    assert_eq!(entry["state"], "live");

    child.kill().unwrap();
    child.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(child.exitcode(), Some(-9));

    let deadline = Instant::now() + Duration::from_secs(20);
    while listed(&orphan).expect("still listed")["state"] != "orphaned" {
        assert!(Instant::now() < deadline, "{:?}", listed(&orphan));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(listed(live.name()).unwrap()["state"], "live");
    assert_eq!(listed(kept.name()).unwrap()["state"], "kept");
    assert!(listed(foreign.name()).is_none(), "a name multiproc did not generate is listed");

    let table = ok(&["shm", "list"]);
    let row = table.lines().find(|l| l.starts_with(&orphan)).expect("a row for the orphan");
    assert!(row.contains(&child_pid.to_string()) && row.ends_with("orphaned"), "{row}");
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");

    let child_pid_arg = child_pid.to_string();
    let my_pid = std::process::id().to_string();
    let names = |report: &serde_json::Value| -> Vec<String> {
        let removed = report["removed"].as_array().expect("a removed array");
        removed.iter().filter_map(|b| b["name"].as_str().map(str::to_string)).collect()
    };
    let dry = json(&["shm", "clean", "--dry-run", "--json", "--pid", &child_pid_arg]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(names(&dry), std::slice::from_ref(&orphan), "{dry}");
    assert!(exists(&orphan), "--dry-run removed a block");

    // The child's orphan goes; this process's live and kept blocks stay, and so does the
    // foreign name that mentions the child's pid.
    let mut removed = Vec::new();
    for pid in [&child_pid_arg, &my_pid] {
        let report = json(&["shm", "clean", "--json", "--pid", pid]);
        assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
        removed.extend(names(&report));
    }
    assert_eq!(removed, std::slice::from_ref(&orphan));
    for survivor in [live.name(), kept.name(), foreign.name()] {
        assert!(exists(survivor), "{survivor} is gone");
    }
    assert!(!exists(&orphan));
    assert!(listed(&orphan).is_none());

    let text = ok(&["shm", "clean", "--pid", &child_pid_arg]);
    assert_eq!(text.lines().last().unwrap(), "removed 0 orphaned blocks (0 B)", "{text}");

    kept.unlink().unwrap();
}

#[test]
fn shm_needs_a_known_subcommand() {
    for args in [&["shm"][..], &["shm", "frobnicate"], &["shm", "list", "--bogus"]] {
        let out = multiproc(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    let help = ok(&["shm", "--help"]);
    assert!(help.contains("list") && help.contains("clean"), "{help}");
}

/// Puts one 8 MiB item and exits normally.
fn put_large_and_exit(q: multiproc::queues::Queue<Vec<u8>>) {
    q.put_timeout(large_item(), Duration::from_secs(60)).unwrap();
}

fn large_item() -> Vec<u8> {
    (0..8usize << 20).map(|i| (i % 251) as u8).collect()
}

#[test]
fn clean_leaves_the_queued_item_of_an_exited_producer() {
    let q = multiproc::queues::Queue::<Vec<u8>>::new(0).unwrap();
    let child = Process::new(put_large_and_exit, q.clone());
    child.start().unwrap();
    let pid = child.pid().unwrap();
    child.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(child.exitcode(), Some(0));

    let all = json(&["shm", "list", "--json"]);
    let theirs: Vec<&serde_json::Value> =
        all.as_array().unwrap().iter().filter(|b| b["owner_pid"] == pid).collect();
    assert_eq!(theirs.len(), 1, "{all}");
    assert_eq!(theirs[0]["state"], "live", "{all}");
    let block = theirs[0]["name"].as_str().unwrap().to_string();

    let report = json(&["shm", "clean", "--pid", &pid.to_string(), "--json"]);
    assert!(report["removed"].as_array().unwrap().is_empty(), "{report}");
    assert!(exists(&block), "clean removed {block}");

    let got = q.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(got == large_item(), "the item came back damaged ({} bytes)", got.len());
    assert!(!exists(&block), "the read item's block stayed");
}
