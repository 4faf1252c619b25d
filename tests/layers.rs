//! The layering of `src/` holds: the table in `src/lib.rs` ("Layers") gives every module a
//! layer, and no module may import from a layer above its own or take part in a cycle of
//! imports between modules. The check reads every `crate::…` and `super::…` path in `src/`
//! (use trees and paths inside code; comments and string literals do not count).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One row of the layer table: a module path (`kafka::config`), its layer number and name.
#[derive(Debug, Clone)]
struct Row {
    module: Vec<String>,
    layer: u32,
    name: String,
}

/// The layer table from the crate docs of `src/lib.rs`.
fn table(lib: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for line in lib.lines() {
        let Some(doc) = line.trim_start().strip_prefix("//!") else {
            continue;
        };
        let cells: Vec<&str> = doc.trim().split('|').collect();
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let first = cells[1].trim();
        let digits: String = first.chars().take_while(char::is_ascii_digit).collect();
        let Ok(layer) = digits.parse::<u32>() else {
            continue;
        };
        let name = first[digits.len()..].trim().to_string();
        for (i, part) in cells[2].split('`').enumerate() {
            if i % 2 == 1 && !part.trim().is_empty() {
                rows.push(Row {
                    module: part.trim().split("::").map(str::to_string).collect(),
                    layer,
                    name: name.clone(),
                });
            }
        }
    }
    rows
}

/// The row a module path belongs to: the longest matching prefix.
fn row_of<'a>(rows: &'a [Row], path: &[String]) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| path.len() >= r.module.len() && path[..r.module.len()] == r.module[..])
        .max_by_key(|r| r.module.len())
}

/// The module path of a file under `src/` (`detect/mod.rs` → `detect`).
fn module_of(file: &str) -> Vec<String> {
    let mut segs: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if segs
        .last()
        .is_some_and(|s| s == "mod" || s == "lib" || s == "main")
    {
        segs.pop();
    }
    segs
}

/// The source with comments and the contents of string and char literals blanked (newlines
/// kept, so line numbers stay right).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            // Not inside an identifier (`br` of a byte raw string is fine).
            let before = |k: usize| i >= k && (b[i - k].is_alphanumeric() || b[i - k] == '_');
            !before(1) || (b[i - 1] == 'b' && !before(2))
        } {
            // Raw string: r"…", r#"…"#, br#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j - i + 1));
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || b.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''), not a lifetime.
            out.push(' ');
            i += 1;
            if b.get(i) == Some(&'\\') {
                out.push_str("  ");
                i += 2;
            }
            while i < b.len() && b[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// One path into the crate found in a file.
#[derive(Debug)]
struct Import {
    line: usize,
    /// As written (`crate::detect::Severity`).
    text: String,
    /// Resolved from the crate root.
    target: Vec<String>,
}

/// Expands a use tree (`crate::{a::B, c::{D, E}}`, whitespace removed) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).to_string()];
    };
    let Some(close) = tree.rfind('}') else {
        return vec![tree.to_string()];
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p.trim()))
        .map(|p| {
            if p == "self" {
                head.trim_end_matches("::").to_string()
            } else {
                format!("{head}{p}")
            }
        })
        .collect()
}

/// Resolves `crate::…`/`super::…` to a path from the crate root; `None` for other roots.
fn resolve(module: &[String], path: &str) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, mut rest): (Vec<String>, &[&str]) = match *segs.first()? {
        "crate" => (Vec::new(), &segs[1..]),
        "super" => (
            module[..module.len().saturating_sub(1)].to_vec(),
            &segs[1..],
        ),
        _ => return None,
    };
    while rest.first() == Some(&"super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(
        rest.iter()
            .filter(|s| **s != "self" && **s != "*")
            .map(|s| s.to_string()),
    );
    Some(base)
}

/// Inline modules (`mod tests { … }`) of a file: name and byte span of the body.
fn inline_modules(code: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = code[from..].find("mod ") {
        let at = from + k;
        from = at + 4;
        if at > 0 && code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + 4..];
        let name_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((rest[..name_len].to_string(), open..open + i));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every path into the crate in one file.
fn imports(file_module: &[String], src: &str) -> Vec<Import> {
    let code = code_only(src);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let inline = inline_modules(&code);
    // The module a position is in: the file's, plus the inline modules around it.
    let module_at = |at: usize| {
        let mut m = file_module.to_vec();
        m.extend(
            inline
                .iter()
                .filter(|(_, span)| span.contains(&at))
                .map(|(name, _)| name.clone()),
        );
        m
    };
    let mut found = Vec::new();
    let mut in_use = Vec::new();
    // Use statements, whole trees.
    let mut from = 0;
    while let Some(k) = code[from..].find("use ") {
        let at = from + k;
        from = at + 4;
        if at > 0 && code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            break;
        };
        // Whitespace dropped except the one around `as`.
        let tree = code[at + 4..at + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" as ", "\u{1}")
            .replace(' ', "")
            .replace('\u{1}', " as ");
        in_use.push(at..at + end);
        let module = module_at(at);
        for path in expand(&tree) {
            if let Some(target) = resolve(&module, &path) {
                found.push(Import {
                    line: line_of(at),
                    text: format!("use {path}"),
                    target,
                });
            }
        }
    }
    // Paths inside code.
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(root) {
            let at = from + k;
            from = at + root.len();
            if in_use.iter().any(|r| r.contains(&at))
                || (at > 0 && code[..at].chars().next_back().is_some_and(is_ident))
            {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(code.len() - at);
            let path = code[at..at + len].trim_end_matches(':');
            if let Some(target) = resolve(&module_at(at), path) {
                found.push(Import {
                    line: line_of(at),
                    text: path.to_string(),
                    target,
                });
            }
        }
    }
    found
}

/// The problems in a set of files (path under `src/` → source): imports reaching up, modules
/// missing from the table, and cycles between the table's modules.
fn check(rows: &[Row], files: &BTreeMap<String, String>) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut count = 0;
    let key = |r: &Row| r.module.join("::");
    for (file, src) in files {
        let module = module_of(file);
        if module.is_empty() || module == ["main"] {
            continue;
        }
        let Some(own) = row_of(rows, &module) else {
            problems.push(format!(
                "src/{file}: module `{}` has no layer in the table of src/lib.rs",
                module.join("::")
            ));
            continue;
        };
        for imp in imports(&module, src) {
            if imp.target.is_empty() {
                continue;
            }
            count += 1;
            let Some(theirs) = row_of(rows, &imp.target) else {
                problems.push(format!(
                    "src/{file}:{}: `{}` names `{}`, which has no layer in the table of src/lib.rs",
                    imp.line, imp.text, imp.target[0]
                ));
                continue;
            };
            if theirs.layer > own.layer {
                problems.push(format!(
                    "src/{file}:{}: `{}` reaches up from layer {} ({}) to layer {} ({})",
                    imp.line, imp.text, own.layer, own.name, theirs.layer, theirs.name
                ));
            }
            if key(own) != key(theirs) {
                edges
                    .entry(key(own))
                    .or_default()
                    .entry(key(theirs))
                    .or_insert_with(|| format!("src/{file}:{}: `{}`", imp.line, imp.text));
            }
        }
    }
    // Cycles between the table's modules: each group of modules that reach each other
    // (a strongly connected component), with the imports that tie it.
    let reach = |from: &str| {
        let mut seen = BTreeSet::from([from.to_string()]);
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|n| (n, reach(n))).collect();
    let mut grouped = BTreeSet::new();
    for (n, r) in &reaches {
        if grouped.contains(*n) {
            continue;
        }
        let group: BTreeSet<&String> = r
            .iter()
            .filter_map(|m| reaches.get_key_value(m).map(|(k, _)| *k))
            .filter(|m| reaches[m].contains(*n))
            .collect();
        if group.len() > 1 {
            let ties: Vec<String> = group
                .iter()
                .flat_map(|a| {
                    edges[*a]
                        .iter()
                        .filter(|(b, _)| group.contains(b))
                        .map(move |(b, at)| format!("{a} → {b} ({at})"))
                })
                .collect();
            let names: Vec<&str> = group.iter().map(|s| s.as_str()).collect();
            problems.push(format!(
                "import cycle among {}: {}",
                names.join(", "),
                ties.join("; ")
            ));
        }
        grouped.extend(group.into_iter().cloned());
    }
    (problems, count)
}

fn src_files() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src");
                let text = std::fs::read_to_string(&path).expect("read file");
                out.insert(rel.to_string_lossy().replace('\\', "/"), text);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

fn real() -> (Vec<Row>, BTreeMap<String, String>) {
    let files = src_files();
    let rows = table(&files["lib.rs"]);
    (rows, files)
}

#[test]
fn src_imports_only_point_down_and_form_no_cycle() {
    let (rows, files) = real();
    // The table is read (every layer present) and the files are really scanned.
    let layers: BTreeSet<u32> = rows.iter().map(|r| r.layer).collect();
    assert_eq!(layers, (0..=8).collect(), "layers in src/lib.rs: {rows:?}");
    let (problems, imports) = check(&rows, &files);
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        files.len() > 60 && imports > 500,
        "{} files, {imports} imports: the scan found too little",
        files.len()
    );
}

#[test]
fn a_planted_upward_import_and_a_module_without_a_layer_are_named() {
    let (rows, mut files) = real();
    // An upward use tree and an upward path in code; a comment, a string and a downward
    // import beside them do not count.
    let event = files["event.rs"].clone()
        + "\nuse crate::{time::Timestamp as _T, detect::{Engine as _E}};\n\
           // crate::kafka::run is only mentioned here\n\
           const _S: &str = \"crate::cli::main\";\n\
           fn _planted() { let _ = crate::replay::Options::default; }\n";
    files.insert("event.rs".into(), event);
    files.insert("planted.rs".into(), "pub fn f() {}\n".into());
    let (problems, _) = check(&rows, &files);
    let all = problems.join("\n");
    let upward: Vec<&String> = problems
        .iter()
        .filter(|p| p.contains("reaches up"))
        .collect();
    assert_eq!(upward.len(), 2, "{all}");
    assert!(
        upward[0].starts_with("src/event.rs:")
            && upward[0].contains("`use crate::detect::Engine`")
            && upward[0].contains("from layer 1 (model) to layer 3 (judge)"),
        "{all}"
    );
    assert!(
        upward[1].starts_with("src/event.rs:")
            && upward[1].contains("`crate::replay::Options::default`")
            && upward[1].contains("to layer 7 (pipelines)"),
        "{all}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("src/planted.rs:") && p.contains("no layer")),
        "{all}"
    );
    // The upward imports close cycles too, and those name the planted imports.
    assert!(
        problems
            .iter()
            .filter(|p| p.starts_with("import cycle"))
            .all(|p| p.contains("src/event.rs:")),
        "{all}"
    );
}

#[test]
fn a_planted_cycle_within_one_layer_is_named() {
    let (rows, mut files) = real();
    // decode and telemetry share layer 2, and telemetry already uses decode.
    let decode = files["decode/mod.rs"].clone() + "\nuse crate::telemetry::metrics as _m;\n";
    files.insert("decode/mod.rs".into(), decode);
    let (problems, _) = check(&rows, &files);
    assert_eq!(problems.len(), 1, "{}", problems.join("\n"));
    let p = &problems[0];
    assert!(
        p.starts_with("import cycle among decode, telemetry:")
            && p.contains("decode → telemetry (src/decode/mod.rs:")
            && p.contains("telemetry → decode (src/telemetry/metrics.rs:"),
        "{p}"
    );
}
