//! `multiproc tour` (placeholder).

/// Options of `multiproc tour`.
#[derive(clap::Args)]
pub struct TourArgs {
    /// Run only the examples whose name starts with this prefix.
    pub only: Option<String>,
}

pub fn run(_args: TourArgs) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
