//! Files that hold records, events or alerts (the rejects file, the lake, the sinks' spools)
//! are their owner's alone: created with mode 0600 on Unix, whatever the umask allows
//! beyond it (they may hold masked records, identities and evidence).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

fn private() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Creates (or truncates) a file for writing.
pub fn create(path: &Path) -> io::Result<File> {
    private().write(true).create(true).truncate(true).open(path)
}

/// Creates a file that must not exist yet.
pub fn create_new(path: &Path) -> io::Result<File> {
    private().write(true).create_new(true).open(path)
}

/// Opens a file for appending, creating it if needed.
pub fn append(path: &Path) -> io::Result<File> {
    private().create(true).append(true).open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_created_for_their_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        create(&a).expect("create");
        create_new(&b).expect("create_new");
        append(&c).expect("append");
        for p in [&a, &b, &c] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        assert!(
            create_new(&b).is_err(),
            "create_new refuses an existing file"
        );
    }
}
