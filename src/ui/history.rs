//! Input history persisted under the user's data directory, one JSON string per line.

use std::path::PathBuf;

/// Most entries kept.
const MAX_ENTRIES: usize = 1000;

/// `<data dir>/mlcli/history.jsonl`.
pub fn path() -> Option<PathBuf> {
    Some(dirs::data_dir()?.join("mlcli").join("history.jsonl"))
}

/// Reads the history (missing or unreadable lines are skipped).
pub fn load(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<String>(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the last [`MAX_ENTRIES`] entries.
pub fn save(path: &std::path::Path, entries: &[String]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let start = entries.len().saturating_sub(MAX_ENTRIES);
    let mut text = String::new();
    for e in &entries[start..] {
        text.push_str(&serde_json::to_string(e).unwrap_or_default());
        text.push('\n');
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_entries_survive_a_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h/history.jsonl");
        let entries = vec!["one".to_string(), "two\nlines".to_string()];
        save(&p, &entries).unwrap();
        assert_eq!(load(&p), entries);
        assert!(load(&d.path().join("missing")).is_empty());
    }
}
