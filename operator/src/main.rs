fn main() {
    println!("sis-operator {}", env!("CARGO_PKG_VERSION"));
}
