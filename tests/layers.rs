//! The layers look down only (DESIGN.md, "Layers"): this test reads every
//! source file of the library and fails when a module names one it may not
//! import, saying which file and which path. It reads text, not the
//! compiler's view, so it also catches imports under `cfg` features this
//! build leaves out (the spdk backend's).
//!
//! The order, top to bottom: the command line (`src/main.rs`, `src/cli/`,
//! a binary no module can import) → `node`, and beside it the command
//! modules `backup` and `bench` → `rpc` → `shard` → `raft` → `wal` →
//! `nvme`; `kv` under `shard` and `raft`; `reactor` under `shard`; `config`
//! plain data at the bottom. Nothing imports `node`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Small tools every layer may use, which import nothing of the crate.
const TOOLS: &[&str] = &["clock", "latency", "little_endian", "logging", "progress"];

/// Every top-level module of the library and the ones it may import
/// besides the tools. Leaves (`config`, `data_dir`, `nvkv_capnp`) import
/// nothing of the crate.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    (
        "node",
        &[
            "config",
            "data_dir",
            "etcd",
            "kv",
            "nvkv_capnp",
            "nvme",
            "raft",
            "reactor",
            "rpc",
            "shard",
            "systemd",
            "topology",
            "wal",
        ],
    ),
    ("backup", &["config", "data_dir", "kv", "nvkv_capnp", "nvme", "raft", "rpc", "shard", "wal"]),
    ("bench", &["config", "kv", "nvkv_capnp", "nvme", "reactor", "rpc", "shard", "topology", "wal"]),
    ("rpc", &["config", "kv", "nvkv_capnp", "raft", "reactor", "shard", "wal"]),
    // The etcd API is the native RPC layer's sibling: the same request
    // handles, never `rpc` itself.
    ("etcd", &["kv", "raft", "reactor", "shard"]),
    ("shard", &["config", "kv", "nvme", "raft", "reactor", "wal"]),
    ("lincheck", &[]),
    ("txn_text", &["kv"]),
    ("systemd", &["config", "reactor"]),
    ("reactor", &["config", "topology"]),
    ("topology", &["config"]),
    ("raft", &["kv", "nvme", "wal"]),
    ("wal", &["nvme"]),
    ("nvme", &[]),
    ("kv", &[]),
    ("config", &[]),
    ("data_dir", &[]),
    ("nvkv_capnp", &[]),
    ("latency", &[]),
    ("little_endian", &[]),
    ("progress", &[]),
    ("clock", &[]),
    ("logging", &[]),
];

/// Imports that break the order today, each with why it is still there.
/// The test fails when one of them is gone too, so this list only shrinks.
const KNOWN: &[(&str, &str, &str)] = &[];

fn source_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The text of a Rust file without comments (line, doc and block) and
/// without the insides of string literals, so prose that names a module
/// is not taken for an import.
fn code_only(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            '"' => {
                code.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                code.push('"');
            }
            // A char literal of a quote ('"') must not open a string.
            '\'' if chars.peek() == Some(&'"') => {
                code.push_str("'\"");
                chars.next();
            }
            c => code.push(c),
        }
    }
    code
}

/// The top-level modules `code` names through `crate::`, including every
/// member of a group (`use crate::{a, b::c}`).
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut imports = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `nvkv_crate::` are not this crate's root.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    c if depth == 1 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "self" {
                    imports.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                imports.insert(name);
            }
        }
    }
    imports
}

/// The top-level module a file of src/ belongs to (`None`: the crate root
/// or the binary).
fn layer_of(source: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(source).expect("a file under src/");
    let first = relative.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    match name.as_str() {
        "lib" | "main" | "cli" => None,
        _ => Some(name),
    }
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("src");
    let rules: BTreeMap<&str, BTreeSet<&str>> =
        MAY_IMPORT.iter().map(|(layer, below)| (*layer, below.iter().copied().collect())).collect();
    let mut files = Vec::new();
    source_files(&source, &mut files);
    files.sort();

    let mut violations = Vec::new();
    let mut known_seen = BTreeSet::new();
    let mut layers_seen = BTreeSet::new();
    for file in &files {
        let Some(layer) = layer_of(&source, file) else { continue };
        layers_seen.insert(layer.clone());
        let Some(allowed) = rules.get(layer.as_str()) else {
            violations.push(format!(
                "{}: module `{layer}` has no place in the layer order; add it to MAY_IMPORT in tests/layers.rs \
                 with the layers it may import",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let relative = file.strip_prefix(root).expect("under the repository").to_string_lossy().into_owned();
        for import in crate_imports(&code_only(&text)) {
            if import == layer || allowed.contains(import.as_str()) || TOOLS.contains(&import.as_str()) {
                continue;
            }
            if KNOWN.iter().any(|(from, to, path)| *from == layer && *to == import && *path == relative) {
                known_seen.insert((layer.clone(), import.clone(), relative.clone()));
                continue;
            }
            violations
                .push(format!("{relative}: `{layer}` imports `crate::{import}`, which is not below it"));
        }
    }
    for (from, to, path) in KNOWN {
        if !known_seen.contains(&(from.to_string(), to.to_string(), path.to_string())) {
            violations.push(format!(
                "{path} no longer imports `{to}` from `{from}`: take the entry out of KNOWN in tests/layers.rs"
            ));
        }
    }
    for (layer, _) in MAY_IMPORT {
        if !layers_seen.contains(*layer) && *layer != "nvkv_capnp" {
            violations.push(format!("MAY_IMPORT names `{layer}`, which src/ no longer has"));
        }
    }
    assert!(violations.is_empty(), "layer order broken:\n{}", violations.join("\n"));
}

/// The order itself has no circle: a layer never reaches itself through
/// the ones it may import.
#[test]
fn the_layer_order_has_no_circle() {
    let rules: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    fn reaches(
        rules: &BTreeMap<&str, &[&str]>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        rules.get(from).into_iter().flat_map(|below| below.iter()).any(|next| {
            *next == target || (seen.insert(next.to_string()) && reaches(rules, next, target, seen))
        })
    }
    for (layer, _) in MAY_IMPORT {
        assert!(
            !reaches(&rules, layer, layer, &mut BTreeSet::new()),
            "`{layer}` reaches itself in MAY_IMPORT"
        );
    }
}

/// The scanner sees what it must: grouped imports, paths in expressions,
/// and not prose or strings.
#[test]
fn the_scanner_finds_imports_and_skips_prose() {
    let code = code_only(
        "//! crate::node in a doc comment\n\
         use crate::{wal::{self, Entry}, nvme::Namespace};\n\
         let x = crate::rpc::client::connect(); /* crate::bench */\n\
         let s = \"crate::backup\"; let q = '\"'; let t = crate::kv::X;\n\
         $crate::cli::output::stdout_failed(e);\n",
    );
    let found: Vec<String> = crate_imports(&code).into_iter().collect();
    assert_eq!(found, ["kv", "nvme", "rpc", "wal"]);
}
