//! Seed `000_65480d669051c820.txt`, "multiprocessing.Pipe: Bidirectional Channels": the
//! parent sends five messages, the child answers each with `Echo: …`, and `None` ends it.

use multiproc::{pipe, Connection, Process};

fn parent_process(conn: &Connection) -> multiproc::Result<()> {
    for i in 0..5 {
        let message = format!("Message {i}");
        conn.send(&Some(message.clone()))?;
        println!("Parent sent: {message}");
        let response: Option<String> = conn.recv()?;
        println!("Parent received: {}", response.unwrap_or_default());
    }
    conn.send(&None::<String>)?; // Signal done
    Ok(())
}

fn child_process(conn: Connection) {
    loop {
        let message: Option<String> = conn.recv().expect("recv");
        let Some(message) = message else { break };
        conn.send(&Some(format!("Echo: {message}"))).expect("send");
    }
    conn.close();
}

pub fn main() -> multiproc::Result<()> {
    let (parent_conn, child_conn) = pipe(true)?;
    let child = Process::new(child_process, child_conn);
    child.start()?;
    parent_process(&parent_conn)?;
    parent_conn.close();
    child.join()?;
    Ok(())
}
