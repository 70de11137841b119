//! The `underroute` binary.

fn main() {
    println!("underroute");
}
