//! Seed `003_38f1b6a322a1f204.txt`, "Low-Level Communication with Pipe": the parent sends
//! three messages of different types and closes its end; the child reads until end of
//! stream (Python's `EOFError`, our `Error::Eof`).

use std::collections::BTreeMap;
use std::fmt;

use multiproc::{pipe, Connection, Error, Process};

/// The three Python values of the seed: `'Hello'`, `42` and `{'key': 'value'}`.
#[derive(serde::Serialize, serde::Deserialize)]
enum Message {
    Str(String),
    Int(i64),
    Dict(BTreeMap<String, String>),
}

impl fmt::Display for Message {
    /// Formats like Python's `str()` of the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Str(s) => write!(f, "{s}"),
            Message::Int(i) => write!(f, "{i}"),
            Message::Dict(d) => {
                let items: Vec<String> = d.iter().map(|(k, v)| format!("'{k}': '{v}'")).collect();
                write!(f, "{{{}}}", items.join(", "))
            }
        }
    }
}

fn sender(conn: Connection, messages: Vec<Message>) -> multiproc::Result<()> {
    for message in messages {
        conn.send(&message)?;
        println!("Sent: {message}");
    }
    conn.close(); // Important: close the sender's end
    Ok(())
}

fn receiver(conn: Connection) {
    loop {
        match conn.recv::<Message>() {
            Ok(message) => println!("Received: {message}"),
            Err(Error::Eof) => {
                println!("No more data. Exiting.");
                break;
            }
            Err(e) => panic!("receive failed: {e}"),
        }
    }
}

pub fn main() -> multiproc::Result<()> {
    let (parent_conn, child_conn) = pipe(true)?;
    let p = Process::new(receiver, child_conn);
    p.start()?;
    let dict = BTreeMap::from([("key".to_string(), "value".to_string())]);
    sender(parent_conn, vec![Message::Str("Hello".into()), Message::Int(42), Message::Dict(dict)])?;
    p.join()?;
    Ok(())
}
