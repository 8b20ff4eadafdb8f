//! Saved conversations: JSON with the model id and parameters (for `/save`, `/load` and
//! `--session`), and a Markdown export.

use std::path::Path;

use crate::engine::{GenerateParams, Message};

/// A conversation as saved on disk.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transcript {
    /// The model's name when it was saved.
    pub model: String,
    /// Sampling and stop settings.
    pub params: GenerateParams,
    /// The system message, if any.
    pub system: Option<String>,
    /// User and assistant turns, oldest first.
    pub messages: Vec<Message>,
}

impl Transcript {
    /// Markdown: one heading per turn.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# Conversation with {}\n\n", self.model);
        if let Some(s) = &self.system {
            out.push_str(&format!("## System\n\n{s}\n\n"));
        }
        for m in &self.messages {
            let who = match m.role.as_str() {
                "user" => "User",
                "assistant" => "Assistant",
                other => other,
            };
            out.push_str(&format!("## {who}\n\n{}\n\n", m.content.trim_end()));
        }
        out
    }

    /// Writes JSON, or Markdown when the file name ends in `.md`.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = if path.extension().is_some_and(|e| e == "md") {
            self.to_markdown()
        } else {
            serde_json::to_string_pretty(self).map_err(|e| e.to_string())?
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // Write then rename, so an interrupted save never destroys the previous file.
        let tmp = path.with_extension("tmp-save");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a JSON transcript.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a saved transcript: {e}", path.display()))
    }
}

/// Where `--session NAME` keeps its transcript: `<data dir>/mlcli/sessions/NAME.json`.
pub fn session_path(name: &str) -> Option<std::path::PathBuf> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        dirs::data_dir()?
            .join("mlcli")
            .join("sessions")
            .join(format!("{safe}.json")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transcript {
        Transcript {
            model: "m".into(),
            params: GenerateParams::default(),
            system: Some("Be brief.".into()),
            messages: vec![
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello!"),
            ],
        }
    }

    #[test]
    fn json_round_trips_and_markdown_has_every_turn() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/chat.json");
        sample().save(&p).unwrap();
        assert_eq!(Transcript::load(&p).unwrap(), sample());
        let md = d.path().join("chat.md");
        sample().save(&md).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.contains("## System\n\nBe brief.") && text.contains("## Assistant\n\nHello!"));
    }

    #[test]
    fn loading_garbage_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        std::fs::write(&p, "{nope").unwrap();
        assert!(Transcript::load(&p).unwrap_err().contains("x.json"));
    }
}
