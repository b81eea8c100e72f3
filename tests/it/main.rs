fn main() {}
mod spoolctl;
