//! `multiproc dead`: the dead letters of a `JoinableQueue` on Redis (or of a Pool's tasks,
//! queue `NAME:tasks`): list, requeue, remove. The logic is
//! `multiproc::distributed::DeadLetters`; this is its front end.

use multiproc::distributed::DeadLetters;

/// Options of `multiproc dead`.
#[derive(clap::Args)]
pub struct DeadArgs {
    /// The Redis server: redis://[user:password@]host[:port][/db], or rediss:// for TLS.
    #[arg(long)]
    redis: String,
    /// The queue (for a Pool named P: P:tasks).
    #[arg(long)]
    queue: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the oldest dead letters: id, deliveries, original id, reason, item size.
    List {
        /// How many at most.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Put dead letters back at the end of the queue, as new items.
    Requeue {
        /// The dead letters' ids (as `list` shows them).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter that holds an item.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Remove {
        /// The dead letters' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

pub fn run(args: DeadArgs) -> Result<(), Box<dyn std::error::Error>> {
    let dead = DeadLetters::connect(&args.redis, &args.queue)?;
    match args.action {
        Action::List { max } => {
            println!("{} dead letters in {}", dead.len()?, dead.name());
            for letter in dead.list(max)? {
                let item =
                    letter.item.map_or("no item".to_string(), |b| format!("{} bytes", b.len()));
                println!(
                    "{}\tdeliveries {}\twas {}\t{}\t{}",
                    letter.id, letter.deliveries, letter.original_id, item, letter.reason
                );
            }
        }
        Action::Requeue { all: true, .. } => println!("requeued {}", dead.requeue_all()?),
        Action::Requeue { ids, .. } => {
            for id in ids {
                if !dead.requeue(&id)? {
                    return Err(format!("no dead letter {id} in {}", dead.name()).into());
                }
                println!("requeued {id}");
            }
        }
        Action::Remove { ids } => {
            for id in ids {
                if !dead.remove(&id)? {
                    return Err(format!("no dead letter {id} in {}", dead.name()).into());
                }
                println!("removed {id}");
            }
        }
    }
    Ok(())
}
