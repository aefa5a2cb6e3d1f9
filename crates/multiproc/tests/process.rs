//! Process behaviour: start, join, exit codes, panics, signals, handles, lineage.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use multiproc::pool::Pool;
use multiproc::{pipe, spawn, Connection, Error, Process, StartMethod};

const LONG: Option<Duration> = Some(Duration::from_secs(60));

fn both_methods(test: impl Fn(StartMethod)) {
    test(StartMethod::Spawn);
    test(StartMethod::Fork);
}

#[test]
fn exit_codes_follow_python() {
    both_methods(|m| {
        let ok = Process::builder(|_: ()| {}, ()).start_method(m).build();
        ok.start().unwrap();
        ok.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(ok.exitcode(), Some(0));

        let exit =
            Process::builder(|n: i32| -> () { std::process::exit(n) }, 7).start_method(m).build();
        exit.start().unwrap();
        exit.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(exit.exitcode(), Some(7));

        let panics =
            Process::builder(|_: ()| -> () { panic!("child says no") }, ()).start_method(m).build();
        panics.start().unwrap();
        panics.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(panics.exitcode(), Some(1));
        assert_eq!(panics.panic_message().as_deref(), Some("child says no"));
    });
}

#[test]
fn terminate_and_kill_give_negative_signal_numbers() {
    both_methods(|m| {
        for (signal, code) in [("term", -15), ("kill", -9)] {
            let p = Process::builder(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
                .start_method(m)
                .build();
            p.start().unwrap();
            assert!(p.is_alive());
            assert_eq!(p.exitcode(), None);
            if signal == "term" {
                p.terminate().unwrap()
            } else {
                p.kill().unwrap()
            }
            p.join_timeout(LONG.unwrap()).unwrap();
            assert_eq!(p.exitcode(), Some(code));
            assert!(!p.is_alive());
        }
    });
}

#[test]
fn join_with_timeout_reports_a_running_child() {
    let p = Process::new(|_: ()| std::thread::sleep(Duration::from_secs(120)), ());
    p.start().unwrap();
    assert!(matches!(p.join_timeout(Duration::from_millis(30)), Err(Error::Timeout(_))));
    assert!(p.is_alive());
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
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
            assert!(message.contains("was killed by SIGKILL"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_child_that_exits_before_returning_reports_its_exit_code() {
    let h = spawn(|_: ()| -> u8 { std::process::exit(3) }, ()).unwrap();
    match h.join() {
        Err(Error::ProcessFailed { exitcode: 3, message, .. }) => {
            assert!(message.contains("exited with code 3 before returning a value"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connections_travel_as_arguments() {
    both_methods(|m| {
        let (parent, child) = pipe(true).unwrap();
        let p = Process::builder(
            |(conn, greeting): (Connection, String)| {
                let n: u32 = conn.recv().unwrap();
                conn.send(&format!("{greeting} {n}")).unwrap();
            },
            (child, "hello".to_string()),
        )
        .start_method(m)
        .build();
        p.start().unwrap();
        parent.send(&5u32).unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), "hello 5");
        p.join_timeout(LONG.unwrap()).unwrap();
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
    let p = Process::builder(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
        .name("sleeper")
        .build();
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(multiproc::active_children().iter().any(|c| c.pid == pid && c.name == "sleeper"));
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
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
        let p = Process::builder(|_: ()| println!("forked child speaking"), ())
            .start_method(StartMethod::Fork)
            .build();
        p.start().unwrap();
        p.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    printer.join().unwrap();
}

#[test]
fn a_forked_child_can_start_daemons_of_its_own() {
    // The parent's daemon-spawner thread does not exist in a forked child.
    let _warm = Process::builder(|_: ()| {}, ()).daemon(true).build();
    _warm.start().unwrap();
    _warm.join_timeout(LONG.unwrap()).unwrap();
    let h = spawn(
        |_: ()| {
            let d = Process::builder(|_: ()| {}, ()).daemon(true).build();
            d.start().unwrap();
            d.join_timeout(Duration::from_secs(60)).unwrap();
            d.exitcode()
        },
        (),
    )
    .unwrap();
    assert_eq!(h.join().unwrap(), Some(0));
    let p = Process::builder(
        |_: ()| {
            let d = Process::builder(|_: ()| {}, ()).daemon(true).build();
            d.start().unwrap();
            d.join_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(d.exitcode(), Some(0));
        },
        (),
    )
    .start_method(StartMethod::Fork)
    .build();
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
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

/// A shared object loaded at run time, and functions that live in it.
struct ForeignObject {
    target: fn(u32),
    action: fn(),
    path: PathBuf,
}

/// Compiles `tests/fixtures/foreign_target.rs` into a shared object and loads it.
fn load_foreign_target() -> ForeignObject {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir()
        .join(format!("multiproc-foreign-target-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join("libmultiproc_foreign_target.so");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/foreign_target.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "-C", "opt-level=0", "-o"])
        .arg(&object)
        .arg(source)
        .stdin(Stdio::null())
        .output()
        .expect("run rustc");
    assert!(built.status.success(), "rustc: {}", String::from_utf8_lossy(&built.stderr));
    // SAFETY: the fixture is a plain Rust cdylib; loading it runs only the standard
    // library's own initialisers.
    let library = unsafe { libloading::Library::new(&object) }.expect("load the fixture");
    // SAFETY: the fixture defines `MULTIPROC_FOREIGN_TARGET` as a `static fn(u32)`; the
    // symbol is the address of that static.
    let target: fn(u32) = unsafe {
        let symbol = library.get::<*const fn(u32)>(b"MULTIPROC_FOREIGN_TARGET").expect("symbol");
        **symbol
    };
    // SAFETY: likewise, `MULTIPROC_FOREIGN_ACTION` is a `static fn()`.
    let action: fn() = unsafe {
        let symbol = library.get::<*const fn()>(b"MULTIPROC_FOREIGN_ACTION").expect("symbol");
        **symbol
    };
    // The file can go; the object stays mapped for as long as this process runs, which a
    // forked child calling `target` needs.
    std::mem::forget(library);
    std::fs::remove_dir_all(&dir).unwrap();
    ForeignObject { target, action, path: object }
}

#[test]
fn a_target_in_another_loaded_object_is_refused_before_spawning_and_runs_when_forked() {
    let ForeignObject { target, action, path } = load_foreign_target();
    let object = path.display().to_string();

    let p = Process::builder(target, 5).start_method(StartMethod::Spawn).build();
    match p.start() {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("shared object"), "{message}");
            assert!(message.contains(&object), "{message}");
            assert!(message.contains("StartMethod::Fork"), "{message}");
        }
        other => {
            // The old behaviour: a child that called an address with nothing of ours at it.
            let _ = p.kill();
            let _ = p.join_timeout(LONG.unwrap());
            panic!("expected a refusal, got {other:?} (child exit code {:?})", p.exitcode());
        }
    }
    assert_eq!(p.pid(), None, "no child may have been started");

    // A pool refuses it too, before any worker is asked to run it.
    let pool = Pool::builder().processes(1).build().unwrap();
    match pool.apply(target, 5) {
        Err(Error::InvalidArgument(message)) => assert!(message.contains(&object), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    pool.close();
    pool.join().unwrap();

    // So does a barrier whose action is such a function, when it is sent to a child.
    let barrier = multiproc::synchronize::Barrier::builder(1).action(action).build().unwrap();
    match spawn(|b: multiproc::synchronize::Barrier| b.parties(), barrier) {
        Err(Error::Codec(message)) => assert!(message.contains(&object), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A forked child shares the parent's address space: there the function is where it was.
    let p = Process::builder(target, 5).start_method(StartMethod::Fork).build();
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(15));
}

/// Starts children whose targets panic, in every way the library catches and reports,
/// and one whose own thread panics (which the library does not catch); prints what the
/// parent receives. Run by
/// `caught_child_panics_print_nothing_in_the_child_and_reach_the_parent`, which reads its
/// output.
#[test]
#[ignore = "a helper, run by caught_child_panics_print_nothing_in_the_child_and_reach_the_parent"]
fn panicking_children() {
    both_methods(|m| {
        let p = Process::builder(
            |m: String| -> () { panic!("expected panic under {m}") },
            format!("{m:?}"),
        )
        .start_method(m)
        .build();
        p.start().unwrap();
        p.join_timeout(LONG.unwrap()).unwrap();
        println!("reported: {}", p.panic_message().unwrap());
    });
    let h = spawn(|_: ()| -> u8 { panic!("expected panic in spawn") }, ()).unwrap();
    println!("reported: {}", h.join().unwrap_err());
    let pool = Pool::builder().processes(1).build().unwrap();
    println!(
        "reported: {}",
        pool.apply(|_: ()| -> u8 { panic!("expected panic in a pool") }, ()).unwrap_err()
    );
    pool.close();
    pool.join().unwrap();
    let h = spawn(
        |_: ()| std::thread::spawn(|| panic!("unexpected panic in a thread")).join().is_err(),
        (),
    )
    .unwrap();
    println!("reported: the thread panicked: {}", h.join().unwrap());
}

#[test]
fn caught_child_panics_print_nothing_in_the_child_and_reach_the_parent() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["panicking_children", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helper failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    // Every expected panic reached the parent...
    for message in [
        "reported: expected panic under Spawn",
        "reported: expected panic under Fork",
        "expected panic in spawn",
        "expected panic in a pool",
        "reported: the thread panicked: true",
    ] {
        assert!(stdout.contains(message), "{message:?} missing\nstdout:\n{stdout}");
    }
    // ...and printed nothing in the child; the one panic nobody catches still prints.
    let all = format!("{stdout}{stderr}");
    assert_eq!(all.matches("panicked at").count(), 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(all.matches("stack backtrace").count(), 1, "stderr:\n{stderr}");
    assert!(stderr.contains("unexpected panic in a thread"), "stderr:\n{stderr}");
}

#[test]
fn a_forked_child_can_panic_while_another_thread_of_the_parent_is_panicking() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Another thread panics over and over, so that it is often inside the panic hook (which
    // holds the standard library's panic-output lock) at the instant of a fork: a child
    // that then printed its own panic through that hook would wait for that lock for ever.
    let stop = Arc::new(AtomicBool::new(false));
    let panicker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut panics = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("a panic in another thread"));
                panics += 1;
            }
            panics
        })
    };
    for i in 0..20 {
        let p = Process::builder(|i: u32| -> () { panic!("expected panic {i}") }, i)
            .start_method(StartMethod::Fork)
            .build();
        p.start().unwrap();
        if let Err(e) = p.join_timeout(Duration::from_secs(30)) {
            let _ = p.kill();
            let _ = p.join_timeout(LONG.unwrap());
            stop.store(true, Ordering::Relaxed);
            panic!("forked child {i} did not end: {e}");
        }
        assert_eq!(p.exitcode(), Some(1));
        assert_eq!(p.panic_message(), Some(format!("expected panic {i}")));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(panicker.join().unwrap() > 0);
}

#[test]
fn join_returns_the_exit_status_with_code_signal_and_python_integer() {
    both_methods(|m| {
        let exit = Process::builder(|n: i32| -> () { std::process::exit(n) }, 3)
            .start_method(m)
            .start()
            .unwrap();
        let status = exit.join_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!((status.code(), status.signal(), status.exitcode()), (Some(3), None, 3));
        assert!(!status.success());
        assert_eq!(exit.join().unwrap(), status);

        let sleeper = Process::builder(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
            .start_method(m)
            .start()
            .unwrap();
        assert!(matches!(sleeper.try_join(), Err(Error::WouldBlock)));
        sleeper.kill().unwrap();
        let status = sleeper.join().unwrap();
        assert_eq!((status.code(), status.signal(), status.exitcode()), (None, Some(9), -9));
        assert_eq!(sleeper.try_join().unwrap(), status);
    });
}

#[test]
fn the_builder_sets_name_daemon_and_start_method() {
    both_methods(|m| {
        let (mine, theirs) = pipe(true).unwrap();
        let p = Process::builder(
            |conn: Connection| {
                let me = multiproc::current_process();
                conn.send(&(me.name, me.daemon)).unwrap();
            },
            theirs,
        )
        .name("builder-test")
        .daemon(true)
        .start_method(m)
        .build();
        assert_eq!((p.name(), p.is_daemon(), p.pid()), ("builder-test", true, None));
        p.start().unwrap();
        let seen: (String, bool) = mine.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(seen, ("builder-test".to_string(), true));
        assert!(p.join().unwrap().success());
    });
}

#[test]
fn kill_on_drop_kills_a_running_child_when_the_process_is_dropped() {
    both_methods(|m| {
        let (mine, theirs) = pipe(true).unwrap();
        let p = Process::builder(
            |conn: Connection| {
                conn.send(&1u8).unwrap();
                let _ = conn.recv::<u8>(); // nothing ever comes
            },
            theirs,
        )
        .kill_on_drop(true)
        .start_method(m)
        .start()
        .unwrap();
        assert_eq!(mine.recv_timeout::<u8>(Duration::from_secs(60)).unwrap(), 1);
        drop(p);
        // Only the child held the other end: its death closes it.
        assert!(matches!(mine.recv_timeout::<u8>(Duration::from_secs(60)), Err(Error::Eof)));
    });
}

fn parse_number(text: String) -> Result<(), std::num::ParseIntError> {
    let n: u32 = text.parse()?;
    assert!(n > 0);
    Ok(())
}

fn fail_with_library_error(_: ()) -> multiproc::Result<()> {
    Err(Error::InvalidArgument("no good".into()))
}

#[test]
fn a_target_returning_err_exits_with_1_and_its_message_reaches_the_parent() {
    both_methods(|m| {
        let ok = Process::builder(parse_number, "12".to_string()).start_method(m).start().unwrap();
        assert!(ok.join().unwrap().success());
        assert_eq!(ok.panic_message(), None);

        let bad = Process::builder(parse_number, "x".to_string()).start_method(m).start().unwrap();
        assert_eq!(bad.join().unwrap().exitcode(), 1);
        assert_eq!(bad.panic_message().as_deref(), Some("invalid digit found in string"));

        let lib = Process::builder(fail_with_library_error, ()).start_method(m).start().unwrap();
        assert_eq!(lib.join().unwrap().code(), Some(1));
        assert_eq!(lib.panic_message().as_deref(), Some("invalid argument: no good"));
    });
}

fn echo_plainly(conn: Connection) {
    let n: u32 = conn.recv().unwrap();
    conn.send(&(n + 1)).unwrap();
}

#[test]
fn a_one_argument_target_takes_its_argument_plainly() {
    both_methods(|m| {
        let (mine, theirs) = pipe(true).unwrap();
        let p = Process::builder(echo_plainly, theirs).start_method(m).start().unwrap();
        mine.send(&41u32).unwrap();
        assert_eq!(mine.recv_timeout::<u32>(Duration::from_secs(60)).unwrap(), 42);
        assert!(p.join().unwrap().success());
    });
}

fn errors_of_every_shape(which: u8) -> multiproc::Result<u8> {
    match which {
        0 => Ok(7),
        1 => Err(Error::Eof),
        2 => Err(Error::Closed("queue")),
        3 => Err(Error::Timeout(Duration::from_millis(1500))),
        4 => Err(std::fs::File::open("/nonexistent/multiproc").unwrap_err().into()),
        5 => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad bytes").into()),
        _ => Err(Error::ProcessFailed { pid: 1, exitcode: -9, message: "gone".into() }),
    }
}

#[test]
fn a_library_error_crosses_the_process_boundary() {
    let join = |which: u8| spawn(errors_of_every_shape, which).unwrap().join().unwrap();
    assert_eq!(join(0).unwrap(), 7);
    assert!(matches!(join(1), Err(Error::Eof)));
    assert!(matches!(join(2), Err(Error::Closed("queue"))));
    assert!(matches!(join(3), Err(Error::Timeout(d)) if d == Duration::from_millis(1500)));
    match join(4) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
            assert_eq!(e.raw_os_error(), Some(2));
        }
        other => panic!("{other:?}"),
    }
    match join(5) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert_eq!(e.to_string(), "bad bytes");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        join(6),
        Err(Error::ProcessFailed { pid: 1, exitcode: -9, message }) if message == "gone"
    ));
    // `?` twice: the spawn/join error, then the child's own.
    let twice = || -> multiproc::Result<u8> { spawn(errors_of_every_shape, 1)?.join()? };
    assert!(matches!(twice(), Err(Error::Eof)));
}
