//! Seed `001_83db91c6e1148748.txt`, "2. Pipes": a child sends one message through a pipe.
//!
//! Python: `parent_conn, child_conn = Pipe(); p = Process(target=f, args=(child_conn,))`
//! prints `Hello from Process`.

use multiproc::{pipe, Connection, Process};

fn f(conn: Connection) {
    conn.send("Hello from Process").expect("send");
    conn.close();
}

pub fn main() -> multiproc::Result<()> {
    let (parent_conn, child_conn) = pipe(true)?;
    let p = Process::new(f, child_conn);
    p.start()?;
    println!("{}", parent_conn.recv::<String>()?); // Output: Hello from Process
    p.join()?;
    Ok(())
}
