//! Text that a file (or a server) supplied, made safe to show: control characters (escape
//! sequences that would drive the terminal, carriage returns that would overwrite a line) are
//! shown escaped, and long strings are cut with their full size named. Every error and view
//! that repeats what a file says goes through here.

/// Characters of file-supplied text an error repeats by default.
pub const SHORT: usize = 200;

/// `s` with control characters escaped and cut to [`SHORT`] characters.
pub fn short(s: &str) -> String {
    short_to(s, SHORT)
}

/// `s` with control characters escaped and cut to `max` characters (the cut names the size).
pub fn short_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str(&format!("… ({} bytes in all)", s.len()));
            return out;
        }
        push(&mut out, c, false);
    }
    out
}

/// One line to print: control characters, line breaks included, escaped, and cut to `max`
/// characters.
pub fn line(s: &str, max: usize) -> String {
    short_to(s, max)
}

/// Text of many lines to print (a template, a table): control characters escaped except line
/// breaks and tabs, nothing cut.
pub fn text(s: &str) -> String {
    if !s.chars().any(|c| is_unsafe(c, true)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        push(&mut out, c, true);
    }
    out
}

fn push(out: &mut String, c: char, keep_lines: bool) {
    if !is_unsafe(c, keep_lines) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.extend(c.escape_unicode()),
    }
}

/// C0 and C1 controls and DEL, and the bidirectional overrides that reorder what a terminal
/// shows.
fn is_unsafe(c: char, keep_lines: bool) -> bool {
    if keep_lines && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_sent() {
        assert_eq!(short("a\x1b[2Jb\r\n"), "a\\u{1b}[2Jb\\r\\n");
        assert_eq!(text("x\n\ty\x07"), "x\n\ty\\u{7}");
        assert_eq!(short("left\u{202e}right"), "left\\u{202e}right");
    }

    #[test]
    fn long_strings_are_cut_with_their_size() {
        let long = "é".repeat(1000);
        let cut = short(&long);
        assert_eq!(cut.chars().filter(|&c| c == 'é').count(), SHORT);
        assert!(cut.ends_with("… (2000 bytes in all)"), "{cut}");
        assert_eq!(short("plain"), "plain");
    }
}
