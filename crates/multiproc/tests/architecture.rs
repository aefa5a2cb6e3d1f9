//! The shape of the source tree, checked: `sys/` is the platform layer (the only code that
//! talks to the operating system, and it names nothing above itself), the modules depend on
//! each other without a cycle, and every file fits in a head.
//!
//! These read the crate's own source files; they guard the layering that DESIGN.md
//! describes, so that a change that breaks it fails here with the offending line named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines of code a source file may hold (doc comments, comments, blank lines and its
/// `#[cfg(test)]` module not counted) unless its module docs give a `Size:` reason.
const MAX_CODE_LINES: usize = 1000;

/// Leaf modules that `sys/` may use: they depend on nothing of the crate themselves.
const SYS_MAY_USE: &[&str] = &["sys", "error", "deadline", "sync_util"];

struct Source {
    /// Path relative to `src/`, with `/` separators.
    rel: String,
    text: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).expect("read src dir").map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source { rel, text });
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 10, "found only {} source files under {}", out.len(), root.display());
    out
}

/// The code of a line: without its `//` comment (a `//` inside a string literal is rare
/// enough in this crate's paths and imports not to matter here).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// `(line number, code)` for each line before the file's `#[cfg(test)]` module.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|(_, next)| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = code_of(line);
        if !code.trim().is_empty() {
            out.push((i + 1, code));
        }
    }
    out
}

/// The top-level module a file belongs to (`pool/worker.rs` → `pool`, `error.rs` → `error`).
fn top_module(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The identifiers `crate::X` names in `code`, including those in `crate::{X, Y::..}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of the group: at brace depth 0, after `{` or `,`.
            let mut depth = 0;
            let mut expect_name = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if !name.is_empty() => {
                        out.push(std::mem::take(&mut name));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.push(name);
            }
        } else {
            let name: String =
                after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
        rest = after;
    }
    out
}

#[test]
fn nothing_outside_sys_names_rustix() {
    let mut found = Vec::new();
    for src in sources() {
        if src.rel.starts_with("sys/") {
            continue;
        }
        for (n, code) in code_lines(&src.text) {
            if code.contains("rustix") {
                found.push(format!("{}:{n}: {}", src.rel, code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "only sys/ talks to the operating system; these lines name rustix:\n{}",
        found.join("\n")
    );
}

#[test]
fn sys_names_nothing_above_it() {
    // The leaf modules `sys/` may use are held to the same rule: they too name nothing
    // above `sys/`.
    let mut found = Vec::new();
    for src in sources().iter().filter(|s| SYS_MAY_USE.contains(&top_module(&s.rel))) {
        for (n, code) in code_lines(&src.text) {
            for name in crate_paths(code) {
                if !SYS_MAY_USE.contains(&name.as_str()) {
                    found.push(format!("{}:{n}: crate::{name} in {}", src.rel, code.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "sys/ (and the leaves it uses) is the bottom layer; these lines reach up:\n{}",
        found.join("\n")
    );
}

/// A cycle in `graph`, as a path that starts and ends at the same node, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_depend_on_each_other_without_a_cycle() {
    let sources = sources();
    let modules: BTreeSet<String> =
        sources.iter().map(|s| top_module(&s.rel).to_string()).filter(|m| m != "lib").collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for src in &sources {
        let from = top_module(&src.rel).to_string();
        if from == "lib" {
            continue;
        }
        for (_, code) in code_lines(&src.text) {
            for name in crate_paths(code) {
                if name != from && modules.contains(&name) {
                    graph.entry(from.clone()).or_default().insert(name);
                }
            }
        }
    }
    assert!(graph.contains_key("pool"), "the graph misses the pool module: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules depend on each other in a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn files_of_one_directory_depend_on_each_other_without_a_cycle() {
    // Within a directory, `super::sibling` and `crate::dir::sibling` are the edges (the
    // directory's mod.rs is the parent that declares and re-exports its children, so edges
    // to and from it are not counted).
    let sources = sources();
    let mut dirs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for src in &sources {
        let Some((dir, file)) = src.rel.rsplit_once('/') else { continue };
        let me = file.strip_suffix(".rs").unwrap().to_string();
        if me == "mod" {
            continue;
        }
        let siblings: BTreeSet<String> = sources
            .iter()
            .filter_map(|s| s.rel.strip_prefix(&format!("{dir}/")))
            .filter(|f| !f.contains('/'))
            .filter_map(|f| f.strip_suffix(".rs"))
            .filter(|f| *f != "mod" && *f != me)
            .map(str::to_string)
            .collect();
        let crate_prefix = format!("crate::{}::", dir.replace('/', "::"));
        let graph = dirs.entry(dir.to_string()).or_default();
        graph.entry(me.clone()).or_default();
        for (_, code) in code_lines(&src.text) {
            for prefix in ["super::", crate_prefix.as_str()] {
                let mut rest = code;
                while let Some(i) = rest.find(prefix) {
                    let after = &rest[i + prefix.len()..];
                    let names: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                        let group = group.split('}').next().unwrap_or("");
                        group
                            .split(',')
                            .map(|n| n.trim().split("::").next().unwrap().to_string())
                            .collect()
                    } else {
                        vec![after
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect()]
                    };
                    for name in names {
                        if siblings.contains(&name) {
                            graph.entry(me.clone()).or_default().insert(name);
                        }
                    }
                    rest = after;
                }
            }
        }
    }
    assert!(dirs.contains_key("managers"), "no managers directory seen: {:?}", dirs.keys());
    for (dir, graph) in &dirs {
        if let Some(cycle) = find_cycle(graph) {
            panic!("the files of {dir}/ depend on each other in a cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn every_file_fits_in_a_head() {
    let mut over = Vec::new();
    for src in sources() {
        let lines = code_lines(&src.text).len();
        let reason =
            src.text.lines().take_while(|l| l.starts_with("//!")).any(|l| l.contains("Size:"));
        if lines > MAX_CODE_LINES && !reason {
            over.push(format!("{}: {lines} lines of code", src.rel));
        }
    }
    assert!(
        over.is_empty(),
        "files over {MAX_CODE_LINES} lines of code without a `//! Size:` reason in their module docs:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The parsers above must find what they are meant to find, or every check passes
    // vacuously.
    assert_eq!(crate_paths("use crate::{error::Error, sys::{pid, shm}};"), ["error", "sys"]);
    assert_eq!(crate_paths("let x = crate::pool::run(crate::sys::pid::pid());"), ["pool", "sys"]);
    assert_eq!(
        code_lines("a\n// c\n\nb // d\n#[cfg(test)]\nmod tests {\nc\n}\n"),
        [(1, "a"), (4, "b ")]
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn the_readme_layout_names_every_module() {
    // The README's module table lists each top-level module as `name.rs` or `name/`;
    // the crate root and its small leaf helpers are left out.
    const UNLISTED: &[&str] = &["lib", "error", "deadline", "sync_util", "fuzzing"];
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("read README.md");
    let layout = readme.split("## Layout").nth(1).expect("README has a Layout section");
    let layout = layout.split("\n## ").next().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (module, listed) = if path.is_dir() {
            (name.clone(), format!("`{name}/`"))
        } else {
            (name.trim_end_matches(".rs").to_string(), format!("`{name}`"))
        };
        if UNLISTED.contains(&module.as_str()) {
            continue;
        }
        seen += 1;
        if !layout.contains(&listed) {
            missing.push(listed);
        }
    }
    assert!(seen > 10, "saw only {seen} modules in {}", root.display());
    assert!(missing.is_empty(), "README.md's Layout table misses {}", missing.join(", "));
}
