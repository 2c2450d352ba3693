//! `static-sync`: the release engineer's tool around `wrangler`.
fn main() {}
