//! Sections of BENCHMARKS.md: each benchmark rewrites only its own `## ...` section. Shared by
//! the `freeze-bench` and `fleet-bench` binaries.

use std::path::Path;

/// `existing` with the section headed like `section`'s first line replaced by `section` (or
/// appended; a new document gets a `# Benchmarks` title), other sections kept byte for byte.
pub fn replace_section(existing: &str, section: &str) -> String {
    let section = section.trim_end();
    let heading = section.lines().next().unwrap_or_default().trim_end();
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let start = lines.iter().position(|l| l.trim_end() == heading);
    let Some(start) = start else {
        let mut out = if existing.trim().is_empty() {
            "# Benchmarks\n".to_owned()
        } else {
            existing.trim_end().to_owned() + "\n"
        };
        out.push('\n');
        out.push_str(section);
        out.push('\n');
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## ") || l.starts_with("# "))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out: String = lines[..start].concat();
    out.push_str(section);
    out.push('\n');
    if end < lines.len() {
        out.push('\n');
        out.push_str(&lines[end..].concat());
    }
    out
}

/// Reads `path` (an absent file is empty), replaces the section headed like `section` and
/// writes it back.
pub fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, replace_section(&existing, section))
}
