//! The library's modules depend only downward: no module reaches, through
//! `crate::` paths, a module that reaches it back (issue 16). Read from the
//! sources (comments and unit-test modules left out), with the names the
//! crate root re-exports resolved to the module that defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `name` → module, from the root's `pub use module::{A, B};` lines.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let flat = lib.replace('\n', " ");
    for stmt in flat.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or("").trim().to_owned();
        let names = rest.split_once("::").map_or("", |x| x.1);
        for n in names.split(|c: char| c == ',' || c == '{' || c == '}' || c.is_whitespace()) {
            if !n.is_empty() {
                map.insert(n.to_owned(), module.clone());
            }
        }
    }
    map
}

fn deps_of(text: &str, reexp: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut deps = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group.split('}').next().unwrap_or("").split(',').collect()
        } else {
            vec![rest]
        };
        for n in names {
            let n: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if n.is_empty() {
                continue;
            }
            deps.insert(reexp.get(&n).cloned().unwrap_or(n));
        }
    }
    deps
}

#[test]
fn modules_depend_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexp = reexports(&lib);
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let name = rel.to_string_lossy();
        if name == "lib.rs" || name.ends_with("tests.rs") || name.ends_with("model.rs") {
            continue;
        }
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let mut deps = deps_of(&text, &reexp);
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
    }
    assert!(graph.len() > 15, "modules found: {graph:?}");
    // A module is in a cycle if it reaches itself.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if d == to {
                    return true;
                }
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        false
    };
    let cyclic: Vec<(&String, &String)> = graph
        .iter()
        .flat_map(|(m, ds)| ds.iter().map(move |d| (m, d)))
        .filter(|(m, d)| graph.contains_key(*d) && reaches(d, m))
        .collect();
    assert!(cyclic.is_empty(), "edges in a cycle: {cyclic:?}");
}
