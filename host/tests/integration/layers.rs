//! The layout drawn in `host/src/lib.rs` ("# Layers") holds for the code: every `crate::…` and
//! `super::…` path in `host/src` (outside `#[cfg(test)]` items) points to a module of a lower
//! layer or to the module's own tree, and no files form an import circle.
//!
//! `cargo nextest run -p sluice -E 'test(/^layers::/)'` runs just this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`ingest::plan`; the crate root is empty) → file text without comments and
/// test-only items.
fn modules() -> BTreeMap<Vec<String>, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let mut path: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().map(String::as_str) == Some("mod") {
            path.pop();
        }
        if path == ["main"] {
            continue; // the binary: it uses the library by its name
        }
        if path == ["lib"] {
            path.clear();
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        modules.insert(path, without_tests(&without_comments(&text)));
    }
    modules
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text with every `#[cfg(test)]` item cut out (a block by its braces, or up to `;`).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let end = match (item.find('{'), item.find(';')) {
            (Some(open), Some(semi)) if semi < open => semi + 1,
            (Some(open), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(semi)) => semi + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every path a `use` tree or an expression names after each `anchor::` (`crate::a::{b, c::d}`
/// gives `a::b` and `a::c::d`), resolved against `base` for `super`.
fn paths_after(text: &str, anchor: &str, base: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(anchor) {
        let start = from + at;
        from = start + anchor.len();
        let ident_before = start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
        };
        if ident_before || !text[from..].starts_with("::") {
            continue;
        }
        let prefix = if anchor == "super" {
            base.to_vec()
        } else {
            Vec::new()
        };
        tree(text, from + 2, prefix, &mut found);
    }
    found
}

fn tree(text: &str, mut at: usize, mut prefix: Vec<String>, found: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    loop {
        skip_space(&mut at);
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                at = tree(text, at, prefix.clone(), found);
                skip_space(&mut at);
                match bytes.get(at) {
                    Some(b',') => at += 1,
                    Some(b'}') => return at + 1,
                    _ => return at,
                }
                skip_space(&mut at);
                if bytes.get(at) == Some(&b'}') {
                    return at + 1;
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        let ident = &text[start..at];
        match ident {
            "" => {
                found.push(prefix);
                return at;
            }
            "self" => {}
            "super" => {
                prefix.pop();
            }
            _ => prefix.push(ident.to_string()),
        }
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            found.push(prefix);
            return at;
        }
    }
}

/// The layers of the picture in lib.rs, top first: the module names of each line.
fn layers(lib: &str) -> Vec<Vec<String>> {
    let section = lib
        .split("//! # Layers")
        .nth(1)
        .expect("lib.rs has a `# Layers` section");
    let block = section
        .split("//! ```text")
        .nth(1)
        .and_then(|b| b.split("//! ```").next())
        .expect("the section draws the layers in a ```text block");
    block
        .lines()
        .map(|line| line.trim_start_matches("//!").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            // Names two spaces apart, then three spaces or more, then what the layer is.
            let names = line.split("   ").next().unwrap_or(line);
            names.split_whitespace().map(str::to_string).collect()
        })
        .collect()
}

/// The longest module prefix of `path` that is a module of the crate.
fn resolve<'a>(
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, String>,
    reexports: &BTreeMap<String, String>,
) -> Option<&'a Vec<String>> {
    let mut path = path.to_vec();
    if let [name] = path.as_slice()
        && let Some(module) = reexports.get(name)
    {
        path = vec![module.clone()];
    }
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// File module → the modules it uses (a module's use of its own ancestors left out: a parent
/// declares its children).
fn edges(modules: &BTreeMap<Vec<String>, String>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let root = &modules[&Vec::new()];
    // `pub use app::Application;` at the crate root: `crate::Application` is `app`.
    let mut reexports = BTreeMap::new();
    for line in root.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ")
            && let Some((module, name)) = rest.trim_end_matches(';').split_once("::")
        {
            reexports.insert(name.to_string(), module.to_string());
        }
    }
    let mut edges = BTreeMap::new();
    for (module, text) in modules {
        let parent = &module[..module.len().saturating_sub(1)];
        let mut targets = BTreeSet::new();
        for path in paths_after(text, "crate", &[])
            .into_iter()
            .chain(paths_after(text, "super", parent))
        {
            if let Some(target) = resolve(&path, modules, &reexports)
                && target != module
                && !module.starts_with(target)
            {
                targets.insert(target.clone());
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

#[test]
fn every_module_uses_only_the_layers_below_its_own() {
    let modules = modules();
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let layers = layers(&lib);
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let tops: BTreeSet<&str> = modules
        .keys()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    let drawn: BTreeSet<&str> = layer_of.keys().copied().collect();
    assert_eq!(
        tops, drawn,
        "the picture in lib.rs names each top-level module once"
    );

    let mut wrong = Vec::new();
    for (module, targets) in edges(&modules) {
        let Some(from) = module.first() else { continue };
        for target in targets {
            let to = &target[0];
            if to != from && layer_of[to.as_str()] <= layer_of[from.as_str()] {
                wrong.push(format!("{} uses {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_form_an_import_circle() {
    let edges = edges(&modules());
    // Tarjan's strongly connected components.
    struct Search<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        circles: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in &self.edges[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[w].min(self.low[v]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.index[w].min(self.low[v]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut circle = Vec::new();
                while let Some(w) = self.stack.pop() {
                    circle.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    self.circles.push(circle);
                }
            }
        }
    }
    let mut search = Search {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        circles: Vec::new(),
    };
    for v in edges.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    assert!(
        search.circles.is_empty(),
        "import circles: {:?}",
        search.circles
    );
}

#[test]
fn the_reader_finds_what_a_use_tree_names() {
    let text = "use crate::{a::b, c::{d, self}, e};\nlet x = crate::f::g();\nuse super::h;";
    let mut found = paths_after(text, "crate", &[]);
    found.sort();
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, ["a::b", "c", "c::d", "e", "f::g"]);
    let up = paths_after(text, "super", &["ingest".to_string()]);
    assert_eq!(up, [vec!["ingest".to_string(), "h".to_string()]]);
    let cut = without_tests("use crate::a;\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n");
    assert!(cut.contains("crate::a") && !cut.contains("crate::b"));
}
