//! The `multiproc` command.
fn main() {
    println!("multiproc");
}
