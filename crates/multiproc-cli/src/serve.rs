//! `multiproc serve`: a manager server in the foreground, for clients on this or other
//! machines (`Manager::connect(ADDR, authkey)`), hosting named objects created on first
//! use (`dict_named`, `list_named`, `queue_named`, …). The logic is
//! `multiproc::managers::Server`; this is its front end.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use multiproc::managers::{Server, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_MESSAGE};

/// Options of `multiproc serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT (port 0 picks a free one), a socket path, or @name
    /// for a Linux abstract socket.
    #[arg(long, default_value = "127.0.0.1:50000")]
    bind: String,
    /// File holding the authkey clients must present (its bytes; one trailing newline is
    /// ignored). Keep it private: anyone with the key can use every object.
    #[arg(long)]
    authkey_file: PathBuf,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE)]
    max_message: usize,
    /// Most authenticated clients served at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS)]
    max_clients: usize,
    /// Most authentication handshakes under way at once (default 64); one more connection
    /// closes the one that has waited longest.
    #[arg(long)]
    max_pending: Option<usize>,
    /// Seconds a client may take to authenticate (default 10).
    #[arg(long)]
    handshake_timeout: Option<f64>,
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut authkey = std::fs::read(&args.authkey_file)
        .map_err(|e| format!("cannot read {}: {e}", args.authkey_file.display()))?;
    if authkey.last() == Some(&b'\n') {
        authkey.pop();
        if authkey.last() == Some(&b'\r') {
            authkey.pop();
        }
    }
    if authkey.is_empty() {
        return Err(format!("{} holds an empty authkey", args.authkey_file.display()).into());
    }
    let mut server = Server::bind(&args.bind, &authkey)?
        .max_message(args.max_message)
        .max_clients(args.max_clients);
    if let Some(handshakes) = args.max_pending {
        server = server.max_pending(handshakes);
    }
    if let Some(seconds) = args.handshake_timeout {
        let timeout = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("--handshake-timeout {seconds}: expected seconds >= 0"))?;
        server = server.handshake_timeout(timeout);
    }
    // The first line names the real address (a port 0 or `@` is resolved), for scripts.
    println!("serving on {}", server.address());
    std::io::stdout().flush()?;
    server.serve_forever()?;
    Ok(())
}
