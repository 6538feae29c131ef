//! The stub's layout rules, read from its own sources (docs/internals.md,
//! "The runtime stub's layout"): the modules import each other without a
//! circle; nothing below `launch/` imports the module that chooses the
//! launch; `sys/` imports nothing above it but `error` and `debug`; and
//! `unsafe`, and the system calls that change the process, live in `sys/`
//! (and the C entry point in `main.rs`) only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path: `[]` is the crate root, `["launch", "plan"]` is
/// `launch/plan.rs`.
type Module = Vec<String>;

struct Source {
    file: PathBuf,
    /// The code outside comments and `#[cfg(test)] mod tests`.
    code: String,
}

fn sources() -> BTreeMap<Module, Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // A module's unit tests in a file of their own.
            if path.file_name().unwrap() == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(
                module,
                Source {
                    file: path,
                    code: code_of(&text),
                },
            );
        }
    }
    out
}

/// `text` without comment lines and without its test module.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split(" // ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` statement names, braces expanded:
/// `use super::{plan, sys::Step};` gives `super::plan` and `super::sys::Step`.
fn use_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let stmt = &rest[at..];
        let end = stmt.find(';').unwrap();
        let tree: String = stmt[4..end].chars().filter(|c| !c.is_whitespace()).collect();
        expand("", &tree, &mut out);
        rest = &stmt[end..];
    }
    out
}

/// The next `use ` or `pub use ` that starts a statement.
fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let line_start = code[..at].rfind('\n').map_or(0, |n| n + 1);
        let before = code[line_start..at].trim();
        if before.is_empty() || before == "pub" || before.starts_with("pub(") {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    match tree.find('{') {
        None => {
            for part in split_top(tree) {
                let part = part.split(" as ").next().unwrap_or(part);
                out.push(format!("{prefix}{part}"));
            }
        }
        Some(open) if split_top(tree).len() == 1 => {
            let inner = &tree[open + 1..tree.len() - 1];
            let head = format!("{prefix}{}", &tree[..open]);
            for part in split_top(inner) {
                expand(&head, part, out);
            }
        }
        Some(_) => {
            for part in split_top(tree) {
                expand(prefix, part, out);
            }
        }
    }
}

/// `a, b::{c, d}` split at the commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Paths written out in code: `crate::error::fail(…)`, `super::plan::view(…)`,
/// or `launch::argv(…)` where `launch` is a child module.
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("::") {
        let start = code[..at]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let tail: String = code[start..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        // `super::{a, b}` is a `use` group, read by `use_paths`.
        if start == at || code[start..].starts_with("::") || code[start + tail.len()..].starts_with('{') {
            continue;
        }
        out.push(tail.trim_end_matches(':').to_string());
    }
    out
}

/// The module a path from `from` lands in (the longest prefix that is a
/// module of the crate); `None` for other crates.
fn resolve(from: &Module, path: &str, modules: &BTreeSet<Module>) -> Option<Module> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty() && *s != "self").collect();
    let (mut base, rest): (Module, &[&str]) = match segs.first()? {
        &"crate" => (Vec::new(), &segs[1..]),
        &"super" => {
            let mut m = from.clone();
            let mut i = 0;
            while segs.get(i) == Some(&"super") {
                m.pop();
                i += 1;
            }
            (m, &segs[i..])
        }
        first => {
            // A bare path names a child module of `from`, or another crate.
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            (from.clone(), &segs[..])
        }
    };
    for s in rest {
        base.push(s.to_string());
        if !modules.contains(&base) {
            base.pop();
            break;
        }
    }
    Some(base)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let sources = sources();
    let modules: BTreeSet<Module> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(m, s)| {
            let targets = use_paths(&s.code)
                .into_iter()
                .chain(inline_paths(&s.code))
                .filter_map(|p| resolve(m, &p, &modules))
                .filter(|t| t != m)
                .collect();
            (m.clone(), targets)
        })
        .collect()
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "main".into()
    } else {
        m.join("::")
    }
}

#[test]
fn the_graph_is_read_from_the_sources() {
    let g = graph();
    // A few arrows that must be there, so that a parser that finds none
    // cannot pass the tests below.
    let has = |from: &[&str], to: &[&str]| {
        let (from, to): (Module, Module) = (
            from.iter().map(|s| s.to_string()).collect(),
            to.iter().map(|s| s.to_string()).collect(),
        );
        g[&from].contains(&to)
    };
    assert!(has(&["launch", "relocated"], &["launch", "short_path"]));
    assert!(has(&["launch", "mounted"], &["fuse"]));
    assert!(has(&["sys", "steps"], &["sys", "namespace"]));
    assert!(has(&["tree", "entry"], &["tree", "extract"]));
    assert!(has(&[], &["launch"]));
    assert!(g.len() >= 25, "{} modules", g.len());
}

#[test]
fn no_module_imports_itself_through_others() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(m: &Module, g: &BTreeMap<Module, BTreeSet<Module>>, path: &mut Vec<Module>, done: &mut BTreeSet<Module>) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            let circle: Vec<String> = path[i..].iter().chain([m]).map(name).collect();
            panic!("import circle: {}", circle.join(" -> "));
        }
        path.push(m.clone());
        for t in &g[m] {
            visit(t, g, path, done);
        }
        path.pop();
        done.insert(m.clone());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn lower_modules_never_import_higher_ones() {
    let launch = vec!["launch".to_string()];
    for (m, targets) in graph() {
        let under = |top: &str| m.first().map(String::as_str) == Some(top);
        for t in &targets {
            let to = |top: &str| t.first().map(String::as_str) == Some(top);
            let bad = (under("launch") && m != launch && *t == launch)
                || (under("sys") && !(to("sys") || to("error") || to("debug")))
                || (under("fuse") && !(to("fuse") || to("error") || to("debug")))
                || (under("tree") && (to("launch") || to("fuse")))
                || (!m.is_empty() && t.is_empty());
            assert!(!bad, "{} imports {}", name(&m), name(t));
        }
    }
}

#[test]
fn unsafe_and_process_system_calls_stay_in_sys() {
    // What changes the process rather than a file: namespaces, mounts,
    // signals, fork/exec/wait, memory mappings, raw system calls.
    let process = [
        "libc::",
        "nix::mount",
        "nix::sched",
        "nix::sys::signal",
        "nix::sys::wait",
        "nix::sys::mman",
        "nix::sys::prctl",
        "nix::sys::resource",
        "fork(",
        "execv",
        "fexecve",
        "setns(",
        "unshare(",
        "pivot_root",
        "umount",
    ];
    for (m, s) in sources() {
        if m.first().map(String::as_str) == Some("sys") {
            // Each unsafe block with its SAFETY line (on one of the three
            // lines above it, or inside the block).
            let text = std::fs::read_to_string(&s.file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.contains("unsafe {") || l.contains("unsafe fn") {
                    let near = lines[i.saturating_sub(3)..(i + 2).min(lines.len())].join("\n");
                    assert!(
                        near.contains("SAFETY") || near.contains("# Safety"),
                        "{}:{}: unsafe without a SAFETY line",
                        s.file.display(),
                        i + 1
                    );
                }
            }
            continue;
        }
        for word in process {
            assert!(
                !s.code.contains(word),
                "{} uses {word}: that belongs in sys/",
                s.file.display()
            );
        }
        let unsafe_blocks = s.code.matches("unsafe {").count() + s.code.matches("unsafe fn").count();
        let allowed = if m.is_empty() { 1 } else { 0 }; // main.rs: the C arguments
        assert!(
            unsafe_blocks <= allowed,
            "{} has unsafe code outside sys/",
            s.file.display()
        );
        if !m.is_empty() {
            assert!(!s.code.contains("allow(unsafe_code)"), "{}", s.file.display());
        }
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("//! "),
                    "{} does not open with a //! line",
                    path.display()
                );
            }
        }
    }
}
