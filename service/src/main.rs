fn main() {
    println!("sis {}", env!("CARGO_PKG_VERSION"));
}
