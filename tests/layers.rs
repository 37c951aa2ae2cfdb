//! The crate's modules import one another in one direction only:
//! error ← real ← parity / precision ← gradcheck / gpu, then ops ← backend ← nn ←
//! io ← eval ← train / onnx ← doctor / bench ← the CLI. Each module may use only
//! modules of a lower layer (and itself); a cycle, or an import against the
//! flow, fails here with the file and the path that caused it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layer of each top-level module (the binary, `main`, is above everything).
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("real", 1),
    ("parity", 2),
    ("precision", 2),
    ("gpu", 3),
    ("gradcheck", 3),
    ("ops", 4),
    ("backend", 5),
    ("nn", 6),
    ("io", 7),
    ("eval", 8),
    ("train", 9),
    ("onnx", 9),
    ("doctor", 10),
    ("bench", 10),
    ("main", 11),
];

/// Names the crate root re-exports, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("Real", "real"),
    ("Precision", "precision"),
    ("with_backend", "backend"),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`None` for lib.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by `prefix` paths in one line of code
/// (`crate::x`, `crate::{x, y::z}`, `$crate::x`, `rnn_wgpu::x`).
fn imports(line: &str, prefix: &str, out: &mut BTreeSet<String>) {
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of a use group: split at depth-0 commas.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident_at(group[start..j].trim()).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident_at(group[start..j].trim()).to_string());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
}

#[test]
fn modules_import_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        seen.insert(module.clone());
        let Some(own) = layer(&module) else {
            problems.push(format!("{}: module {module} has no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let mut used = BTreeSet::new();
            let prefix = if module == "main" {
                "rnn_wgpu::"
            } else {
                "crate::"
            };
            imports(code, prefix, &mut used);
            for name in used.into_iter().filter(|n| !n.is_empty()) {
                let target = ROOT_ITEMS
                    .iter()
                    .find(|(item, _)| *item == name)
                    .map_or(name.as_str(), |(_, m)| m);
                if target == module {
                    continue;
                }
                match layer(target) {
                    Some(l) if l < own => {}
                    Some(l) => problems.push(format!(
                        "{}:{}: {module} (layer {own}) imports {target} (layer {l}): {}",
                        file.display(),
                        n + 1,
                        code
                    )),
                    None => problems.push(format!(
                        "{}:{}: {module} imports {target}, which has no layer",
                        file.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    // Every module of the table exists (the table does not rot).
    for (m, _) in LAYERS {
        assert!(seen.contains(*m), "LAYERS names {m}, which is not a module");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_import_scanner_sees_groups_and_macros() {
    let mut used = BTreeSet::new();
    imports(
        "use crate::{backend::{Backend, api}, nn::Rnn}; let e = $crate::ops::x; notcrate::io",
        "crate::",
        &mut used,
    );
    let want: BTreeSet<String> = ["backend", "nn", "ops"].map(String::from).into();
    assert_eq!(used, want);
}
