//! Every relative link in `README.md` and `docs/*.md` reaches a file that exists, and
//! every `#anchor` a heading of the page it names.
//!
//! 1. Each page's links are read outside code: fenced blocks and `inline code` are
//!    skipped, as is anything with a scheme (`https:`, `mailto:`).
//! 2. A link's path is resolved against the page's folder; it must exist (a file or a
//!    folder).
//! 3. An anchor must be the slug of one of the target page's headings, made as GitHub
//!    makes them: lower case, punctuation dropped, spaces turned into `-`, and `-1`,
//!    `-2` after repeats.
//!
//! And the proxy file the README shows loads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root: this crate's parent folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The pages checked: the README and every page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ is readable");
    for entry in docs.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// The lines of a page that are prose: fenced code blocks left out.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    text.lines().enumerate().filter(move |(_, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// A line without its `inline code` spans (single or double backticks).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(fence) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the `[text](target)` links of a line.
fn links(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut found = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    let text = without_code_marks(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A heading's text with its backticks and link brackets gone, their words kept.
fn without_code_marks(heading: &str) -> String {
    heading.replace('`', "")
}

/// Every anchor a page's headings make.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// What is wrong with one link of `page`, if anything.
fn check(page: &Path, text: &str, target: &str) -> Option<String> {
    if target.contains(':') || target.is_empty() {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap_or(Path::new(".")).join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: {} does not exist", file.display()));
    }
    let anchor = anchor?;
    let target_text = if path.is_empty() {
        text.to_owned()
    } else if file.extension().is_some_and(|e| e == "md") {
        std::fs::read_to_string(&file).ok()?
    } else {
        return None;
    };
    (!anchors(&target_text).contains(anchor))
        .then(|| format!("{target}: no heading makes the anchor #{anchor}"))
}

#[test]
fn relative_links_reach_files_and_headings() {
    let root = root();
    let mut wrong = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a page is readable");
        for (i, line) in prose(&text) {
            for target in links(line) {
                if let Some(why) = check(&page, &text, &target) {
                    let name = page.strip_prefix(&root).unwrap_or(&page);
                    wrong.push(format!("{}:{}: {why}", name.display(), i + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "dangling links:\n{}", wrong.join("\n"));
}

/// The README's own proxy file (the heredoc between `<<'YAML'` and `YAML`) loads.
#[test]
fn the_readme_proxy_file_loads() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme
        .find("<<'YAML'\n")
        .expect("the README writes a weft.yaml");
    let body = &readme[start + "<<'YAML'\n".len()..];
    let end = body.find("\nYAML\n").expect("the heredoc ends");
    let config = weft_config::Config::parse(&body[..=end], "README.md")
        .unwrap_or_else(|e| panic!("the README's weft.yaml: {e}"));
    if let Err(e) = config.validate() {
        panic!("the README's weft.yaml: {e}");
    }
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" `weft stat`: the mesh's traffic at a glance"),
        "weft-stat-the-meshs-traffic-at-a-glance"
    );
    assert_eq!(slug(" `builtin:router`"), "builtinrouter");
    assert_eq!(
        slug(" Restarts: node ids, state folders"),
        "restarts-node-ids-state-folders"
    );
    let text = "# A\n## A\n```\n# B\n```\n";
    let made: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(made, ["a", "a-1"]);
    assert_eq!(links("see [x](a.md#b) and `[y](z.md)`"), ["a.md#b"]);
}
