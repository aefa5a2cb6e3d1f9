//! `multiproc shm`: the shared memory blocks this library created, live, orphaned (their
//! creator is gone) or kept, and the removal of the orphans. The logic is
//! `multiproc::shared_memory::{list_blocks, clean_orphans}`; this is its front end.

use multiproc::shared_memory::{self, BlockInfo};

/// Options of `multiproc shm`.
#[derive(clap::Args)]
pub struct ShmArgs {
    #[command(subcommand)]
    command: ShmCommand,
}

#[derive(clap::Subcommand)]
enum ShmCommand {
    /// List the blocks in /dev/shm that multiproc created: name, creator pid, size, state.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the orphaned blocks (their creator is gone); live and kept blocks, and
    /// objects multiproc did not name, are left alone.
    Clean {
        /// Only the blocks that this process created.
        #[arg(long)]
        pid: Option<i32>,
        /// Print a JSON object {"removed": [...], "failed": [...]} instead of text.
        #[arg(long)]
        json: bool,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(args: ShmArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        ShmCommand::List { json } => list(json),
        ShmCommand::Clean { json, dry_run, pid } => clean(json, dry_run, pid),
    }
}

fn list(json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let blocks = shared_memory::list_blocks()?;
    if json {
        println!("{}", serde_json::to_string(&blocks)?);
    } else if blocks.is_empty() {
        println!("no shared memory blocks made by multiproc in /dev/shm");
    } else {
        print_table(&blocks);
    }
    Ok(())
}

fn clean(json: bool, dry_run: bool, pid: Option<i32>) -> Result<(), Box<dyn std::error::Error>> {
    let (removed, failed) = if dry_run {
        let orphans = shared_memory::list_blocks()?
            .into_iter()
            .filter(|b| b.state == shared_memory::BlockState::Orphaned)
            .filter(|b| pid.is_none_or(|pid| pid == b.owner_pid))
            .collect();
        (orphans, Vec::new())
    } else {
        let report = match pid {
            Some(pid) => shared_memory::clean_orphans_of(pid)?,
            None => shared_memory::clean_orphans()?,
        };
        (report.removed, report.failed)
    };
    if json {
        let failed: Vec<serde_json::Value> =
            failed.iter().map(|(b, e)| serde_json::json!({"block": b, "error": e})).collect();
        let out = serde_json::json!({"dry_run": dry_run, "removed": removed, "failed": failed});
        println!("{out}");
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for b in &removed {
            println!("{verb} {} (pid {}, {})", b.name, b.owner_pid, human_size(b.size));
        }
        for (b, e) in &failed {
            println!("could not remove {} (pid {}): {e}", b.name, b.owner_pid);
        }
        let total: u64 = removed.iter().map(|b| b.size).sum();
        println!(
            "{verb} {} orphaned block{} ({})",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            human_size(total)
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} orphaned block(s) could not be removed", failed.len()).into())
    }
}

fn print_table(blocks: &[BlockInfo]) {
    let rows: Vec<[String; 4]> = blocks
        .iter()
        .map(|b| {
            let state = if b.state == shared_memory::BlockState::Kept && !b.owner_alive {
                "kept (creator exited)".to_string()
            } else {
                b.state.to_string()
            };
            [b.name.clone(), b.owner_pid.to_string(), human_size(b.size), state]
        })
        .collect();
    let header = ["NAME", "PID", "SIZE", "STATE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", line.trim_end());
    }
}

/// `4096 B`, `64.0 KiB`, `1.5 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
