//! The rooms' boundaries (ARCHITECTURE.md): which top-level modules of the kubelet library use
//! which, read from the source (`crate::x` paths, `use crate::{x, y}` groups; comments left
//! out). No two rooms may use each other, directly or through a ring, and few rooms besides the
//! composition and the hollow node may reach into `pod/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Rooms outside `pod/` allowed to use it, besides the binary, `composition/` and `hollow.rs`.
const MAX_POD_USERS: usize = 3;

fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every `crate::` path in `src`.
fn used_modules(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices("crate::") {
        let after = &src[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&item).to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(&item).to_string());
        } else {
            out.insert(ident(after).to_string());
        }
    }
    out.remove("");
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// room → (room it uses → the files that use it).
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let room_of = |p: &Path| {
        let rel = p.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        first.strip_suffix(".rs").unwrap_or(&first).to_string()
    };
    let rooms: BTreeSet<String> =
        all.iter().map(|p| room_of(p)).filter(|r| !["lib", "main", "bin"].contains(&r.as_str())).collect();
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in &all {
        let room = room_of(p);
        if !rooms.contains(&room) {
            continue;
        }
        let text = strip_comments(&std::fs::read_to_string(p).unwrap());
        let rel = p.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        for used in used_modules(&text).into_iter().filter(|u| rooms.contains(u) && *u != room) {
            g.entry(room.clone()).or_default().entry(used).or_default().insert(rel.clone());
        }
    }
    g
}

/// Every room that can reach itself, with the path that shows it.
fn rings(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in g.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in g.get(&at).into_iter().flat_map(|m| m.keys()) {
                if next == start {
                    let mut ring = path.clone();
                    ring.push(start.clone());
                    found.push(ring);
                    stack.clear();
                    break;
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
}

#[test]
fn the_reader_sees_groups_and_skips_comments() {
    let src = "use crate::{a, b::{c, d}, e::f};\n// crate::g\nfn x() { crate::h::i(); } /* crate::j */";
    let got: Vec<String> = used_modules(&strip_comments(src)).into_iter().collect();
    assert_eq!(got, ["a", "b", "e", "h"]);
}

#[test]
fn no_two_rooms_use_each_other_directly_or_in_a_ring() {
    let g = graph();
    let rings = rings(&g);
    let shown: Vec<String> = rings
        .iter()
        .map(|r| {
            let steps: Vec<String> =
                r.windows(2).map(|w| format!("{} -> {} ({:?})", w[0], w[1], g[&w[0]][&w[1]])).collect();
            steps.join(", ")
        })
        .collect();
    assert!(rings.is_empty(), "rings between rooms:\n{}", shown.join("\n"));
}

#[test]
fn few_rooms_reach_into_pod() {
    let g = graph();
    let users: Vec<(&String, &BTreeSet<String>)> = g
        .iter()
        .filter(|(room, _)| !["pod", "composition", "hollow"].contains(&room.as_str()))
        .filter_map(|(room, uses)| uses.get("pod").map(|files| (room, files)))
        .collect();
    assert!(users.len() <= MAX_POD_USERS, "rooms using pod/: {users:?}");
}
