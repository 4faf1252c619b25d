//! Writes an identity flood (see `tests/util/flood.rs`) for `scripts/flood`.
//!
//! ```text
//! cargo run --release --example flood -- 3000000 target/flood/flood-3000000.jsonl
//! ```

#[path = "../tests/util/flood.rs"]
#[allow(dead_code)]
mod flood;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(n), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: flood IDENTITIES FILE");
        std::process::exit(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("flood: {n:?} is not a number of identities");
        std::process::exit(2);
    };
    match flood::write(std::path::Path::new(&path), n) {
        Ok(records) => println!("{records} records written to {path}"),
        Err(e) => {
            eprintln!("flood: {path}: {e}");
            std::process::exit(1);
        }
    }
}
