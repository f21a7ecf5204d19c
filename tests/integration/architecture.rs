//! The module structure stays what docs/architecture.md draws: no file of `src/` imports, through `crate::` or
//! `super::` paths, a file that imports it back (directly or around a loop), and no file grows past the size a
//! reader can hold. Test code (after `#[cfg(test)]`, and `tests.rs` files) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a file of `src/` may have.
const MAX_LINES: usize = 800;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/http1/client.rs` -> `http1::client`, `src/gate/mod.rs` -> `gate`, `src/lib.rs`
/// -> ``.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The longest prefix of `path` that names a module of `modules`.
fn resolve(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// The module paths a file's code (not its tests or comments) names through `crate::` or `super::`.
fn imports(text: &str, module: &[String]) -> Vec<Vec<String>> {
    // Doc links and comments name modules without importing them.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut out = Vec::new();
    for (start, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        let before = code[..start].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[start..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
        let mut path: Vec<String> = if segments[0] == "crate" {
            Vec::new()
        } else {
            // `super` of `a::b` is `a`, whether `a::b` is held in `a/b.rs` or `a/b/mod.rs`.
            let mut base = module.to_vec();
            base.pop();
            base
        };
        path.extend(segments[1..].iter().map(|s| (*s).to_owned()));
        out.push(path);
    }
    out
}

#[test]
fn the_source_has_no_import_cycle_and_no_oversized_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs") && !f.ends_with("main.rs"))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut oversized = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if text.lines().count() > MAX_LINES {
            oversized.push(format!("{} ({} lines)", file.display(), text.lines().count()));
        }
        let module = module_of(&src, file);
        let targets = edges.entry(module.clone()).or_default();
        for path in imports(&text, &module) {
            if let Some(target) = resolve(&modules, &path) {
                // A file naming an item of a module that holds it (its parent, the crate root) is no import.
                if target != module && !module.starts_with(&target) {
                    targets.insert(target);
                }
            }
        }
    }
    assert!(oversized.is_empty(), "files over {MAX_LINES} lines: {oversized:?}");

    // Depth-first search for a back edge; the loop it closes is reported whole.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    return Some(
                        stack[from..]
                            .iter()
                            .map(|m| m.join("::"))
                            .chain([next.join("::")])
                            .collect(),
                    );
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, &edges, &mut state, &mut Vec::new()) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }
    // The check sees imports at all: the gate's pipeline uses the HTTP/1 hop-by-hop rules.
    assert!(edges[&vec!["gate".to_owned()]].contains(&vec!["http1".to_owned(), "hop".to_owned()]));
}
