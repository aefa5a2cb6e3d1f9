//! Process behaviour: start, join, exit codes, panics, signals, handles, lineage.

use std::time::Duration;

use multiproc::{pipe, spawn, Connection, Error, Process, StartMethod};

const LONG: Option<Duration> = Some(Duration::from_secs(60));

fn both_methods(test: impl Fn(StartMethod)) {
    test(StartMethod::Spawn);
    test(StartMethod::Fork);
}

#[test]
fn exit_codes_follow_python() {
    both_methods(|m| {
        let ok = Process::new(|_: ()| {}, ()).start_method(m);
        ok.start().unwrap();
        ok.join(LONG).unwrap();
        assert_eq!(ok.exitcode(), Some(0));

        let exit = Process::new(|n: i32| std::process::exit(n), 7).start_method(m);
        exit.start().unwrap();
        exit.join(LONG).unwrap();
        assert_eq!(exit.exitcode(), Some(7));

        let panics = Process::new(|_: ()| panic!("child says no"), ()).start_method(m);
        panics.start().unwrap();
        panics.join(LONG).unwrap();
        assert_eq!(panics.exitcode(), Some(1));
        assert_eq!(panics.panic_message().as_deref(), Some("child says no"));
    });
}

#[test]
fn terminate_and_kill_give_negative_signal_numbers() {
    both_methods(|m| {
        for (signal, code) in [("term", -15), ("kill", -9)] {
            let p = Process::new(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
                .start_method(m);
            p.start().unwrap();
            assert!(p.is_alive());
            assert_eq!(p.exitcode(), None);
            if signal == "term" {
                p.terminate().unwrap()
            } else {
                p.kill().unwrap()
            }
            p.join(LONG).unwrap();
            assert_eq!(p.exitcode(), Some(code));
            assert!(!p.is_alive());
        }
    });
}

#[test]
fn join_with_timeout_reports_a_running_child() {
    let p = Process::new(|_: ()| std::thread::sleep(Duration::from_secs(120)), ());
    p.start().unwrap();
    assert!(matches!(p.join(Some(Duration::from_millis(30))), Err(Error::Timeout(_))));
    assert!(p.is_alive());
    p.kill().unwrap();
    p.join(LONG).unwrap();
}

#[test]
fn spawn_returns_the_value_and_panics_carry_their_message() {
    both_methods(|_| {
        let h = spawn(|v: Vec<u32>| v.iter().sum::<u32>(), vec![1, 2, 3]).unwrap();
        assert_eq!(h.join().unwrap(), 6);
        let h = spawn(|_: ()| -> u8 { panic!("deliberate {}", 42) }, ()).unwrap();
        match h.join() {
            Err(Error::ProcessFailed { exitcode: 1, message, .. }) => {
                assert!(message.contains("deliberate 42"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_killed_child_reports_its_signal() {
    let h = spawn(
        |_: ()| -> u8 {
            std::thread::sleep(Duration::from_secs(120));
            0
        },
        (),
    )
    .unwrap();
    h.process().kill().unwrap();
    match h.join() {
        Err(Error::ProcessFailed { exitcode: -9, message, .. }) => {
            assert!(message.contains("KILL"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connections_travel_as_arguments() {
    both_methods(|m| {
        let (parent, child) = pipe(true).unwrap();
        let p = Process::new(
            |(conn, greeting): (Connection, String)| {
                let n: u32 = conn.recv().unwrap();
                conn.send(&format!("{greeting} {n}")).unwrap();
            },
            (child, "hello".to_string()),
        )
        .start_method(m);
        p.start().unwrap();
        parent.send(&5u32).unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), "hello 5");
        p.join(LONG).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
}

#[test]
fn children_know_their_name_and_parent() {
    let h = spawn(
        |_: ()| {
            let me = multiproc::current_process();
            let parent = multiproc::parent_process().map(|p| p.pid);
            (me.name, me.pid, parent)
        },
        (),
    )
    .unwrap();
    let child_pid = h.process().pid().unwrap();
    let (name, pid, parent) = h.join().unwrap();
    assert!(name.starts_with("Process-"), "{name}");
    assert_eq!(pid, child_pid);
    assert_eq!(parent, Some(std::process::id() as i32));
}

#[test]
fn active_children_lists_running_children_only() {
    let p = Process::new(|_: ()| std::thread::sleep(Duration::from_secs(120)), ()).name("sleeper");
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(multiproc::active_children().iter().any(|c| c.pid == pid && c.name == "sleeper"));
    p.kill().unwrap();
    p.join(LONG).unwrap();
    assert!(!multiproc::active_children().iter().any(|c| c.pid == pid));
}

#[test]
fn forking_while_other_threads_print_never_deadlocks_the_child() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let printer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "");
                let _ = out.flush();
            }
        })
    };
    for _ in 0..50 {
        let p = Process::new(|_: ()| println!("forked child speaking"), ())
            .start_method(StartMethod::Fork);
        p.start().unwrap();
        p.join(LONG).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    printer.join().unwrap();
}

#[test]
fn a_forked_child_can_start_daemons_of_its_own() {
    // The parent's daemon-spawner thread does not exist in a forked child.
    let _warm = Process::new(|_: ()| {}, ()).daemon(true);
    _warm.start().unwrap();
    _warm.join(LONG).unwrap();
    let h = spawn(
        |_: ()| {
            let d = Process::new(|_: ()| {}, ()).daemon(true);
            d.start().unwrap();
            d.join(Some(Duration::from_secs(60))).unwrap();
            d.exitcode()
        },
        (),
    )
    .unwrap();
    assert_eq!(h.join().unwrap(), Some(0));
    let p = Process::new(
        |_: ()| {
            let d = Process::new(|_: ()| {}, ()).daemon(true);
            d.start().unwrap();
            d.join(Some(Duration::from_secs(60))).unwrap();
            assert_eq!(d.exitcode(), Some(0));
        },
        (),
    )
    .start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join(LONG).unwrap();
    assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
}

fn stdin_and_socket_count(_: ()) -> (usize, bool) {
    use std::io::Read;
    let mut text = String::new();
    let read = std::io::stdin().read_to_string(&mut text).unwrap();
    // Descriptor 0 is /dev/null, not the bootstrap socket the child was started with.
    let target = std::fs::read_link("/proc/self/fd/0").unwrap();
    (read, target == std::path::Path::new("/dev/null"))
}

#[test]
fn a_spawned_child_reads_end_of_file_from_stdin() {
    assert_eq!(spawn(stdin_and_socket_count, ()).unwrap().join().unwrap(), (0, true));
}
