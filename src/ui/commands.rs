//! Slash commands of the chat UI: parsing, help text and Tab completion.

/// Every command with its usage and a one-line description, in help order.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("/help", "", "show this help"),
    ("/clear", "", "start a new conversation"),
    (
        "/system",
        "<text>",
        "set the system message (empty to remove)",
    ),
    (
        "/set",
        "<name> <value>",
        "temp, top_p, dry_multiplier, … (see /show params)",
    ),
    (
        "/show",
        "<info|params|template|system>",
        "show model info, parameters, template or system message",
    ),
    ("/regen", "", "regenerate the last reply"),
    ("/edit", "", "edit and resend the last user message"),
    (
        "/drop",
        "",
        "drop the oldest exchange (when the context is full)",
    ),
    (
        "/save",
        "<file>",
        "save the transcript (JSON; .md exports Markdown)",
    ),
    ("/load", "<file>", "load a transcript saved with /save"),
    ("/stats", "", "timings of the replies so far"),
    ("/quit", "", "leave"),
];

/// Names accepted by `/set`, the same as the CLI flags: the engine's sampling settings
/// ([`crate::engine::settings::NAMES`]) and `max_tokens`.
pub fn settings() -> impl Iterator<Item = &'static str> + Clone {
    crate::engine::settings::NAMES
        .iter()
        .copied()
        .chain(["max_tokens"])
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `/help`
    Help,
    /// `/clear`
    Clear,
    /// `/system [text]`
    System(String),
    /// `/set name value`
    Set(String, String),
    /// `/show what`
    Show(String),
    /// `/regen`
    Regen,
    /// `/edit`
    Edit,
    /// `/drop`
    Drop,
    /// `/save file`
    Save(String),
    /// `/load file`
    Load(String),
    /// `/stats`
    Stats,
    /// `/quit`
    Quit,
}

/// Parses a line starting with `/`; the error says what was wrong and what is accepted.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let need = |what: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("{name} needs {what}"))
        } else {
            Ok(rest.to_string())
        }
    };
    Ok(match name {
        "/help" | "/?" => Command::Help,
        "/clear" => Command::Clear,
        "/system" => Command::System(rest.to_string()),
        "/set" => {
            let (k, v) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                format!(
                    "usage: /set <{}> <value>",
                    settings().collect::<Vec<_>>().join("|")
                )
            })?;
            Command::Set(k.to_string(), v.trim().to_string())
        }
        "/show" => Command::Show(need("one of info, params, template, system")?),
        "/regen" => Command::Regen,
        "/edit" => Command::Edit,
        "/drop" => Command::Drop,
        "/save" => Command::Save(need("a file name")?),
        "/load" => Command::Load(need("a file name")?),
        "/stats" => Command::Stats,
        "/quit" | "/exit" | "/bye" => Command::Quit,
        other => return Err(format!("unknown command {other}; /help lists the commands")),
    })
}

/// Completes a partly typed command name (`/re` → `/regen`), or a `/set` or `/show` argument.
pub fn complete(line: &str) -> Option<String> {
    let candidates: Vec<String> = if let Some(arg) = line.strip_prefix("/set ") {
        settings()
            .filter(|s| s.starts_with(arg))
            .map(|s| format!("/set {s} "))
            .collect()
    } else if let Some(arg) = line.strip_prefix("/show ") {
        ["info", "params", "template", "system"]
            .iter()
            .filter(|s| s.starts_with(arg))
            .map(|s| format!("/show {s}"))
            .collect()
    } else if line.starts_with('/') && !line.contains(' ') {
        COMMANDS
            .iter()
            .filter(|(c, _, _)| c.starts_with(line))
            .map(|(c, usage, _)| {
                if usage.is_empty() {
                    c.to_string()
                } else {
                    format!("{c} ")
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    match candidates.as_slice() {
        [one] => Some(one.clone()),
        [] => None,
        many => {
            // The longest common prefix, when it adds something.
            let first = &many[0];
            let common = (0..first.len())
                .rev()
                .map(|n| &first[..=n])
                .find(|p| first.is_char_boundary(p.len()) && many.iter().all(|c| c.starts_with(p)))
                .unwrap_or("");
            (common.len() > line.len()).then(|| common.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(
            parse("/set temp 0.2"),
            Ok(Command::Set("temp".into(), "0.2".into()))
        );
        assert_eq!(
            parse("/system Be brief."),
            Ok(Command::System("Be brief.".into()))
        );
        assert_eq!(parse("/save chat.md"), Ok(Command::Save("chat.md".into())));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert!(parse("/save").unwrap_err().contains("file name"));
        assert!(parse("/frobnicate").unwrap_err().contains("/help"));
        assert!(parse("/set temp").is_err());
    }

    #[test]
    fn set_accepts_every_sampling_setting_and_max_tokens() {
        let names: Vec<&str> = settings().collect();
        assert!(names.contains(&"max_tokens") && names.contains(&"dry_multiplier"));
        assert_eq!(names.len(), crate::engine::settings::NAMES.len() + 1);
    }

    #[test]
    fn tab_completes_commands_and_arguments() {
        assert_eq!(complete("/reg").as_deref(), Some("/regen"));
        assert_eq!(complete("/sa").as_deref(), Some("/save "));
        assert_eq!(complete("/s"), None); // /system, /set, /show, /save, /stats share only "/s"
        assert_eq!(complete("/st").as_deref(), Some("/stats"));
        assert_eq!(complete("/set to").as_deref(), Some("/set top_"));
        assert_eq!(
            complete("/set dry_m").as_deref(),
            Some("/set dry_multiplier ")
        );
        assert_eq!(complete("/show te").as_deref(), Some("/show template"));
        assert_eq!(complete("hello"), None);
    }
}
