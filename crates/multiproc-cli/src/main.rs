//! The `multiproc` command: `tour` runs every ported seed example, `bench` measures
//! multiproc against CPython's `multiprocessing` on this machine, `serve` runs a manager
//! server, `shm` lists shared memory blocks, `worker` runs Pool tasks from Redis,
//! `dead` lists and requeues dead letters on Redis.

use clap::{Parser, Subcommand};

mod bench;
mod dead;
mod serve;
mod shm;
mod tour;
mod worker;

#[derive(Parser)]
#[command(name = "multiproc", version, about = "Python's multiprocessing, rebuilt in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every ported example from the seed texts and print what each shows.
    Tour(tour::TourArgs),
    /// Measure multiproc (and CPython's multiprocessing, when python3 is present).
    Bench(bench::BenchArgs),
    /// List or clean the shared memory blocks this library created.
    Shm(shm::ShmArgs),
    /// Run a manager server for clients on this or other machines.
    Serve(serve::ServeArgs),
    /// Run tasks of a distributed Pool on Redis (the built-in square, sleep_ms, echo).
    Worker(worker::WorkerArgs),
    /// List, requeue or remove the dead letters of a queue on Redis.
    Dead(dead::DeadArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tour(args) => tour::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Shm(args) => shm::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Dead(args) => dead::run(args),
    };
    if let Err(e) = result {
        eprintln!("multiproc: {e}");
        std::process::exit(1);
    }
}
