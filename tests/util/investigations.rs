//! The named SQL blocks of `docs/investigations.md` (`-- name: …` on their first line).
//! Shared by the lake tests and `benches/investigations.rs`, so both run exactly the queries
//! the document shows.

/// (name, SQL) of every `sql` block, in document order.
pub fn queries() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/investigations.md");
    let doc = std::fs::read_to_string(path).expect("docs/investigations.md");
    let mut out = Vec::new();
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("```sql\n") {
        let body = &rest[i + 7..];
        let end = body.find("```").expect("closed block");
        let sql = body[..end].trim().to_string();
        rest = &body[end + 3..];
        let name = sql
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- name: "))
            .unwrap_or_else(|| panic!("query without a name:\n{sql}"))
            .to_string();
        out.push((name, sql));
    }
    out
}
