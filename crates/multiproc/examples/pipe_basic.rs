//! Seed `002_bc33bbe47c6941d6.txt`, "Basic Pipe": one child sends a string and a list, a
//! second child receives and prints them.

use multiproc::{pipe, Connection, Process};

fn sender(conn: Connection) {
    conn.send("Hello from sender!").expect("send");
    conn.send(&vec![1, 2, 3]).expect("send");
    conn.close();
}

fn receiver(conn: Connection) {
    let msg1: String = conn.recv().expect("recv");
    let msg2: Vec<i32> = conn.recv().expect("recv");
    println!("Received: {msg1}");
    println!("Received: {msg2:?}");
}

pub fn main() -> multiproc::Result<()> {
    let (parent_conn, child_conn) = pipe(true)?;
    let p1 = Process::new(sender, child_conn);
    let p2 = Process::new(receiver, parent_conn);
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
