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
//!
//! Inside the shard layer the files look down too: the files of
//! `src/shard/` import one another without a circle (the pieces of a group
//! below the group, the group below the registry, the request handles on
//! top), and the test says which circle when they do not.

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
    names_after(code, "crate::")
}

/// The first names of the paths that follow `prefix` in `code`, including
/// every member of a group (`prefix{a, b::c}`). A `prefix` that ends a
/// longer path (`$crate::`, `nvkv_crate::`, `a::super::`) does not count.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut imports = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
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
            // `super::*` (a test module's) names no sibling.
            if !name.is_empty() && name != "self" {
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

/// `code` without its test modules (`#[cfg(test)] mod name { ... }`): a
/// test may build a whole group to try one piece of it, and `super::` in a
/// test module is the file itself. Takes `code_only`'s output, so no brace
/// hides in a comment or a string.
fn without_test_modules(code: &str) -> String {
    let mut kept = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_module = after.strip_prefix("mod ").is_some_and(|module| {
            let name_end = module.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(module.len());
            module[name_end..].trim_start().starts_with('{')
        });
        if !is_module {
            // `#[cfg(test)] mod test_support;` or a test-only item: kept.
            kept.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = after.find('{').expect("a module body opens");
        let mut depth = 0;
        let mut end = after.len();
        for (index, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + index + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    kept.push_str(rest);
    kept
}

/// Which files of one module's folder each file imports, by file name
/// (`mod` for mod.rs): through `super::` and `crate::<module>::` in the
/// files, and through the names mod.rs re-exports (`pub use group::X`
/// makes `super::X` an import of group.rs). mod.rs imports the files it
/// names in paths (`registry::local`) and re-exports, not the ones it only
/// declares (`pub mod group;`).
fn file_imports(folder: &Path, module: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut code = BTreeMap::new();
    for entry in std::fs::read_dir(folder).expect("the module's folder is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) =
            path.file_name().and_then(|name| name.to_str()).and_then(|name| name.strip_suffix(".rs"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        code.insert(name.to_string(), without_test_modules(&code_only(&text)));
    }
    file_graph(&code, module)
}

/// [`file_imports`] over the code of each file, by file name.
fn file_graph(code: &BTreeMap<String, String>, module: &str) -> BTreeMap<String, BTreeSet<String>> {
    let siblings: BTreeSet<&str> = code.keys().map(String::as_str).filter(|name| *name != "mod").collect();
    // What mod.rs re-exports, by the name it is reached by.
    let mut exported_by: BTreeMap<String, String> = BTreeMap::new();
    let root = code.get("mod").map(String::as_str).unwrap_or("");
    let mut rest = root;
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let statement = &rest[..rest.find(';').unwrap_or(rest.len())];
        let Some((from, items)) = statement.split_once("::") else { continue };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or("").trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                exported_by.insert(name.to_string(), from.trim().to_string());
            }
        }
    }
    let mut graph = BTreeMap::new();
    for (file, text) in code {
        let mut imports = BTreeSet::new();
        if file == "mod" {
            for sibling in &siblings {
                let path = format!("{sibling}::");
                if !names_after(text, &path).is_empty() || names_after(text, "pub use ").contains(*sibling) {
                    imports.insert(sibling.to_string());
                }
            }
        } else {
            let mut names = names_after(text, "super::");
            names.extend(names_after(text, &format!("crate::{module}::")));
            for name in names {
                let target = if siblings.contains(name.as_str()) {
                    name
                } else {
                    exported_by.get(&name).cloned().unwrap_or_else(|| "mod".to_string())
                };
                if &target != file {
                    imports.insert(target);
                }
            }
        }
        graph.insert(file.clone(), imports);
    }
    graph
}

/// A circle of `graph`, as the files in import order with the first again
/// at the end; `None` when there is none.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        file: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| on_path == file) {
            let mut circle = path[start..].to_vec();
            circle.push(file.to_string());
            return Some(circle);
        }
        if done.contains(file) {
            return None;
        }
        path.push(file.to_string());
        for next in graph.get(file).into_iter().flatten() {
            if let Some(circle) = visit(graph, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(file.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|file| visit(graph, file, &mut Vec::new(), &mut done))
}

#[test]
fn the_files_of_the_shard_layer_import_no_circle() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shard");
    let graph = file_imports(&folder, "shard");
    assert!(graph.len() > 10 && graph.contains_key("group"), "src/shard/ has its files: {graph:?}");
    if let Some(circle) = find_circle(&graph) {
        let listing: Vec<String> = graph
            .iter()
            .map(|(file, imports)| {
                format!("  {file} -> {}", imports.iter().cloned().collect::<Vec<_>>().join(", "))
            })
            .collect();
        panic!(
            "the files of src/shard/ import one another in a circle: {}\n(a piece a group holds takes the \
             handles it needs instead of the group; what reads the registry sits above it)\nevery file's \
             imports:\n{}",
            circle.join(" -> "),
            listing.join("\n")
        );
    }
}

/// The file graph sees imports through `super::`, the module's path and
/// mod.rs's re-exports, and skips test modules; the circle finder names the
/// circle it finds, and finds none where there is none.
#[test]
fn the_file_graph_finds_imports_and_circles_and_skips_tests() {
    let files = [
        ("mod", "pub mod group;\npub mod registry;\npub use registry::{local, Handle as Other};\nfn r() { answer::x(); }"),
        ("group", "use super::lease::Deadlines; fn f() { super::Other::new(); }"),
        ("lease", "use crate::shard::{answer, stages::Stages};\n#[cfg(test)]\nmod tests { use super::*; use crate::shard::group::G; }"),
        ("registry", "#[cfg(test)]\nuse super::group::ShardGroup;"),
        ("answer", "// super::group in a comment"),
        ("stages", "fn g() -> super::ShardReport { todo!() }"),
    ];
    let code: BTreeMap<String, String> =
        files.iter().map(|(file, text)| (file.to_string(), without_test_modules(&code_only(text)))).collect();
    let graph = file_graph(&code, "shard");
    let imports = |file: &str| graph[file].iter().cloned().collect::<Vec<_>>();
    assert_eq!(imports("mod"), ["answer", "registry"]);
    assert_eq!(imports("group"), ["lease", "registry"], "`Other` is registry's, re-exported");
    assert_eq!(imports("lease"), ["answer", "stages"], "the test module's import of group does not count");
    assert_eq!(imports("registry"), ["group"], "a test-only import outside a test module counts");
    assert!(imports("answer").is_empty());
    assert_eq!(imports("stages"), ["mod"], "a name mod.rs defines itself is mod.rs's");

    let edges = |pairs: &[(&str, &str)]| {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in pairs {
            graph.entry(from.to_string()).or_default().insert(to.to_string());
            graph.entry(to.to_string()).or_default();
        }
        graph
    };
    let circle = find_circle(&edges(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b"), ("e", "a")]));
    assert_eq!(circle, Some(["b", "c", "d", "b"].map(String::from).to_vec()));
    assert_eq!(find_circle(&edges(&[("a", "b"), ("b", "c"), ("a", "c"), ("e", "a")])), None);
}

/// The most lines a file under src/ may have unless its module doc says
/// why (in a line that names the limit: "over 900 lines").
const FILE_LINES_MAX: usize = 900;

/// A file past the limit does several jobs, or one that its doc must
/// argue: this keeps the rooms small once split.
#[test]
fn no_source_file_is_longer_than_the_limit_unless_its_doc_says_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), &mut files);
    assert!(files.len() > 50, "src/ holds only {} files: the scan looked in the wrong place", files.len());
    let too_long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).expect("a source file is readable");
            let lines = text.lines().count();
            let argued = text
                .lines()
                .take_while(|line| line.starts_with("//!") || line.is_empty())
                .any(|line| line.contains(&format!("over {FILE_LINES_MAX} lines")));
            (lines > FILE_LINES_MAX && !argued).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "files over {FILE_LINES_MAX} lines whose module doc does not say why: {too_long:?}; split them, or \
         say why in a module doc line that names \"over {FILE_LINES_MAX} lines\""
    );
}
