//! The input box's text: multiline editing with a cursor (in characters, not bytes).

/// Editable multiline text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    lines: Vec<String>,
    row: usize,
    col: usize,
}

fn byte_at(s: &str, col: usize) -> usize {
    s.char_indices().nth(col).map_or(s.len(), |(i, _)| i)
}

impl Input {
    /// Input holding `text`, cursor at the end.
    pub fn with_text(text: &str) -> Self {
        let mut i = Self::default();
        i.insert_str(text);
        i
    }

    /// The whole text.
    pub fn text(&self) -> String {
        if self.lines.is_empty() {
            String::new()
        } else {
            self.lines.join("\n")
        }
    }

    /// The lines (at least one).
    pub fn lines(&self) -> Vec<&str> {
        if self.lines.is_empty() {
            vec![""]
        } else {
            self.lines.iter().map(String::as_str).collect()
        }
    }

    /// Cursor as (row, column in characters).
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    /// True when there is no text.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(String::is_empty)
    }

    /// True when the text has more than one line.
    pub fn is_multiline(&self) -> bool {
        self.lines.len() > 1
    }

    /// Empties the input.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn ensure_line(&mut self) {
        if self.lines.is_empty() {
            self.lines.push(String::new());
        }
    }

    /// Inserts one character at the cursor.
    pub fn insert(&mut self, c: char) {
        if c == '\n' {
            return self.newline();
        }
        self.ensure_line();
        let line = &mut self.lines[self.row];
        line.insert(byte_at(line, self.col), c);
        self.col += 1;
    }

    /// Inserts text (e.g. a paste) at the cursor; `\r\n` and `\r` become newlines.
    pub fn insert_str(&mut self, text: &str) {
        for c in text.replace("\r\n", "\n").replace('\r', "\n").chars() {
            self.insert(c);
        }
    }

    /// Splits the line at the cursor.
    pub fn newline(&mut self) {
        self.ensure_line();
        let line = &mut self.lines[self.row];
        let rest = line.split_off(byte_at(line, self.col));
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.col = 0;
    }

    /// Deletes the character before the cursor (joining lines at a line start).
    pub fn backspace(&mut self) {
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            let at = byte_at(line, self.col - 1);
            line.remove(at);
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = self.lines[self.row].chars().count();
            self.lines[self.row].push_str(&line);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        let Some(line) = self.lines.get_mut(self.row) else {
            return;
        };
        if self.col < line.chars().count() {
            let at = byte_at(line, self.col);
            line.remove(at);
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    fn line_len(&self, row: usize) -> usize {
        self.lines.get(row).map_or(0, |l| l.chars().count())
    }

    /// Moves the cursor one character left (to the previous line's end at a line start).
    pub fn left(&mut self) {
        if self.col > 0 {
            self.col -= 1;
        } else if self.row > 0 {
            self.row -= 1;
            self.col = self.line_len(self.row);
        }
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        if self.col < self.line_len(self.row) {
            self.col += 1;
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = 0;
        }
    }

    /// Moves up a line; false when already on the first line.
    pub fn up(&mut self) -> bool {
        if self.row == 0 {
            return false;
        }
        self.row -= 1;
        self.col = self.col.min(self.line_len(self.row));
        true
    }

    /// Moves down a line; false when already on the last line.
    pub fn down(&mut self) -> bool {
        if self.row + 1 >= self.lines.len() {
            return false;
        }
        self.row += 1;
        self.col = self.col.min(self.line_len(self.row));
        true
    }

    /// To the start of the line.
    pub fn home(&mut self) {
        self.col = 0;
    }

    /// To the end of the line.
    pub fn end(&mut self) {
        self.col = self.line_len(self.row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_across_lines_keeps_text_and_cursor_consistent() {
        let mut i = Input::default();
        i.insert_str("héllo");
        i.left();
        i.left();
        i.newline();
        assert_eq!(i.text(), "hél\nlo");
        assert_eq!(i.cursor(), (1, 0));
        i.backspace();
        assert_eq!(i.text(), "héllo");
        assert_eq!(i.cursor(), (0, 3));
        i.delete();
        assert_eq!(i.text(), "hélo");
        i.end();
        i.insert('!');
        assert_eq!(i.text(), "hélo!");
    }

    #[test]
    fn paste_normalises_line_endings() {
        let i = Input::with_text("a\r\nb\rc");
        assert_eq!(i.text(), "a\nb\nc");
        assert!(i.is_multiline());
        assert_eq!(i.cursor(), (2, 1));
    }

    #[test]
    fn up_and_down_report_the_edges() {
        let mut i = Input::with_text("one\ntwo");
        assert!(!i.down());
        assert!(i.up());
        assert!(!i.up());
        assert_eq!(i.cursor(), (0, 3));
    }
}
