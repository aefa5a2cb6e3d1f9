//! `multiproc shm` (placeholder).

/// Options of `multiproc shm`.
#[derive(clap::Args)]
pub struct ShmArgs {}

pub fn run(_args: ShmArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("multiproc shm is not implemented yet".into())
}
