//! Every ported seed example, run through `multiproc tour NAME`, prints what its seed says.

use std::process::Command;

/// Runs one stop of the tour and returns its output lines (without the header).
fn tour(name: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["tour", name])
        .output()
        .expect("run multiproc tour");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tour {name} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert!(lines[0].starts_with(&format!("=== {name} ")), "{lines:?}");
    lines.remove(0);
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line:?} missing from {lines:#?}"))
}

#[test]
fn pipe_hello_prints_hello_from_process() {
    assert_eq!(tour("pipe_hello"), ["Hello from Process"]);
}

#[test]
fn pipe_echo_gets_every_message_echoed() {
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(format!("Parent sent: Message {i}"));
        expected.push(format!("Parent received: Echo: Message {i}"));
    }
    assert_eq!(tour("pipe_echo"), expected);
}

#[test]
fn memory_isolation_leaves_the_parent_counter_at_zero() {
    assert_eq!(tour("memory_isolation"), ["Counter: 0"]);
}

#[test]
fn pipe_basic_receives_a_string_and_a_list() {
    assert_eq!(tour("pipe_basic"), ["Received: Hello from sender!", "Received: [1, 2, 3]"]);
}

#[test]
fn pipe_ping_pong_alternates_three_rounds() {
    let mut expected = Vec::new();
    for i in 0..3 {
        expected.push(format!("Worker received: Main message {i}"));
        expected.push(format!("Main received: Worker reply {i}"));
    }
    assert_eq!(tour("pipe_ping_pong"), expected);
}

#[test]
fn process_class_runs_both_workers_and_joins_them() {
    let lines = tour("process_class");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let mut pids = Vec::new();
    for (name, delay) in [("Process-1", 2), ("Process-2", 1)] {
        let started = lines
            .iter()
            .find(|l| l.starts_with(&format!("Process {name} (PID: ")))
            .unwrap_or_else(|| panic!("no start line for {name}: {lines:#?}"));
        assert!(
            started.ends_with(&format!(") started. Sleeping for {delay} seconds.")),
            "{started}"
        );
        let pid: u32 = started
            .split("PID: ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {started}"));
        pids.push(pid);
        assert!(position(&lines, &format!("Process {name} finished.")) > 1);
    }
    assert_ne!(pids[0], pids[1], "each worker is its own process");
    // The 1-second worker finishes before the 2-second one.
    assert!(
        position(&lines, "Process Process-2 finished.")
            < position(&lines, "Process Process-1 finished.")
    );
    assert_eq!(lines[4], "All processes have finished execution.");
}

#[test]
fn pipe_eof_receives_everything_then_end_of_stream() {
    let lines = tour("pipe_eof");
    let sent: Vec<&String> = lines.iter().filter(|l| l.starts_with("Sent: ")).collect();
    let received: Vec<&String> = lines.iter().filter(|l| !l.starts_with("Sent: ")).collect();
    assert_eq!(sent, ["Sent: Hello", "Sent: 42", "Sent: {'key': 'value'}"]);
    assert_eq!(
        received,
        ["Received: Hello", "Received: 42", "Received: {'key': 'value'}", "No more data. Exiting."]
    );
}

#[test]
fn tour_lists_its_stops_and_rejects_unknown_names() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_multiproc")).args(["tour", "--list"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).lines().count() >= 7);
    let output = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["tour", "no_such_example"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no example matches"));
}

#[test]
fn queue_hello_prints_hello_from_process() {
    assert_eq!(tour("queue_hello"), ["Hello from Process"]);
}

#[test]
fn queue_workers_square_every_task() {
    let lines = tour("queue_workers");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // Four workers: results arrive in any order; the seed shows them sorted.
    let inner = lines[0].trim_start_matches("[(").trim_end_matches(")]");
    let mut pairs: Vec<&str> = inner.split("), (").collect();
    pairs.sort();
    assert_eq!(pairs, ["0, 1", "1, 4", "2, 9", "3, 16", "4, 25"]);
}

#[test]
fn queue_pipeline_sums_squares_in_threes() {
    assert_eq!(
        tour("queue_pipeline"),
        ["Final result: 5", "Final result: 50", "Final result: 149"]
    );
}

#[test]
fn queue_basic_consumes_what_was_produced_in_order() {
    let lines = tour("queue_basic");
    let produced: Vec<&String> = lines.iter().filter(|l| l.starts_with("Produced: ")).collect();
    let consumed: Vec<&String> = lines.iter().filter(|l| l.starts_with("Consumed: ")).collect();
    assert_eq!(
        produced,
        (1..=5).map(|i| format!("Produced: {i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    assert_eq!(
        consumed,
        (1..=5).map(|i| format!("Consumed: {i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    assert_eq!(lines.len(), 10);
}

#[test]
fn queue_collect_gathers_every_square() {
    assert_eq!(tour("queue_collect"), ["{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}"]);
}

#[test]
fn queue_bounded_produces_and_consumes_all_then_finishes() {
    let lines = tour("queue_bounded");
    let producing: Vec<&String> = lines.iter().filter(|l| l.starts_with("Producing ")).collect();
    let consuming: Vec<&String> = lines.iter().filter(|l| l.starts_with("Consuming ")).collect();
    assert_eq!(producing.len(), 5);
    assert_eq!(
        consuming,
        (1..=5).map(|i| format!("Consuming {i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    for i in 1..=5 {
        // An item is consumed only after it was produced.
        assert!(
            position(&lines, &format!("Producing {i}"))
                < position(&lines, &format!("Consuming {i}"))
        );
    }
    assert_eq!(lines[lines.len() - 2], "Consumer done.");
    assert_eq!(lines[lines.len() - 1], "Producer-consumer example finished.");
}

#[test]
fn shm_basic_doubles_the_array_in_a_child() {
    assert_eq!(tour("shm_basic"), ["Before: [1. 2. 3. 4. 5.]", "After: [ 2.  4.  6.  8. 10.]"]);
}

#[test]
fn shm_numpy_chunks_squares_every_chunk_in_place() {
    assert_eq!(tour("shm_numpy_chunks"), ["First 10: [ 0.  1.  4.  9. 16. 25. 36. 49. 64. 81.]"]);
}

#[test]
fn value_array_double_doubles_the_array_and_adds_ten() {
    assert_eq!(
        tour("value_array_double"),
        ["Before: array=[1, 2, 3, 4, 5], counter=0", "After: array=[2, 4, 6, 8, 10], counter=10"]
    );
}

#[test]
fn locked_counter_2m_counts_two_million() {
    assert_eq!(tour("locked_counter_2m"), ["Final counter: 2000000"]);
}

#[test]
fn value_pi_array_squares_sets_pi_and_squares() {
    assert_eq!(tour("value_pi_array_squares"), ["3.14159", "[0, 1, 4, 9, 16]"]);
}

#[test]
fn value_race_may_lose_increments_but_never_invents_them() {
    let lines = tour("value_race");
    assert_eq!(lines.len(), 1);
    let n: u64 = lines[0].strip_prefix("Counter: ").and_then(|n| n.parse().ok()).expect("a count");
    assert!((1..=200_000).contains(&n), "{n}");
}

#[test]
fn value_with_lock_and_builtin_lock_count_exactly() {
    assert_eq!(tour("value_with_lock"), ["Counter: 200000"]);
    assert_eq!(tour("value_builtin_lock"), ["Counter: 200000"]);
}

#[test]
fn array_examples_print_what_python_prints() {
    assert_eq!(tour("array_fill"), ["[10.0, 11.0, 12.0, 13.0, 14.0]"]);
    assert_eq!(
        tour("array_init"),
        ["[1, 2, 3, 4, 5]", "[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]"]
    );
    assert_eq!(tour("array_concurrent"), ["[10, 10, 10, 10, 10]"]);
}

/// The items of a printed Python list or dict, sorted.
fn sorted_items(line: &str) -> Vec<String> {
    let inner = line.trim_start_matches(['[', '{']).trim_end_matches([']', '}']);
    let mut items: Vec<String> = inner.split(", ").map(str::to_string).collect();
    items.sort();
    items
}

#[test]
fn manager_dict_is_written_by_a_child() {
    assert_eq!(tour("manager_dict"), ["Hello from Process"]);
}

#[test]
fn manager_list_gets_every_item_in_some_order() {
    let lines = tour("manager_list");
    assert_eq!(lines.len(), 1);
    assert_eq!(sorted_items(&lines[0]), ["0", "1", "2", "3", "4"]);
}

#[test]
fn manager_shared_dict_gets_every_square() {
    let lines = tour("manager_shared_dict");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        sorted_items(&lines[0]),
        ["'key_0': 0", "'key_1': 1", "'key_2': 4", "'key_3': 9", "'key_4': 16"]
    );
}

#[test]
fn manager_namespace_holds_a_counter_and_a_managed_list() {
    // `ns.x += 1` from five processes is a read-modify-write race (in Python too): x is
    // between 1 and 5, and each of the five appends saw one of those values.
    let lines = tour("manager_namespace");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let x: u32 = lines[0].strip_prefix("x = ").and_then(|x| x.parse().ok()).expect("x");
    assert!((1..=5).contains(&x));
    let items = sorted_items(lines[1].strip_prefix("items = ").expect("items"));
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i.parse::<u32>().is_ok_and(|v| (1..=5).contains(&v))));
}

#[test]
fn manager_value_is_updated_by_a_child() {
    assert_eq!(tour("manager_value"), ["0", "1"]);
}

#[test]
fn manager_work_queue_runs_jobs_over_tcp() {
    assert_eq!(
        tour("manager_work_queue"),
        [
            "20 results from 3 workers (20 jobs done)",
            "first: (1, 1), last: (20, 400)",
            "sum of squares 1..=20 = 2870",
        ]
    );
}

#[test]
fn pool_squares_tasks_keeps_the_task_order() {
    assert_eq!(tour("pool_squares_tasks"), ["[(0, 1), (1, 4), (2, 9), (3, 16), (4, 25)]"]);
}

#[test]
fn pool_map_squares_maps_in_order() {
    assert_eq!(tour("pool_map_squares"), ["[0, 1, 4, 9, 16]", "{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}"]);
}
