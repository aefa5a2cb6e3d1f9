//! `multiproc bench` (placeholder).

/// Options of `multiproc bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only the benchmarks whose name starts with this prefix.
    #[arg(long)]
    pub only: Option<String>,
}

pub fn run(_args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("bench is not implemented yet".into())
}
