//! Seed `002_bc33bbe47c6941d6.txt`, "Bidirectional Pipe": the main process and a worker
//! take turns, three rounds.

use multiproc::{pipe, Connection, Process};

fn ping_pong((conn, name): (Connection, String)) {
    for i in 0..3 {
        let msg: String = conn.recv().expect("recv");
        println!("{name} received: {msg}");
        conn.send(&format!("{name} reply {i}")).expect("send");
    }
    conn.close();
}

pub fn main() -> multiproc::Result<()> {
    let (conn1, conn2) = pipe(true)?;
    let p = Process::new(ping_pong, (conn2, "Worker".to_string()));
    p.start()?;
    for i in 0..3 {
        conn1.send(&format!("Main message {i}"))?;
        let reply: String = conn1.recv()?;
        println!("Main received: {reply}");
    }
    p.join()?;
    Ok(())
}
