//! Drawing the chat screen from `&App` only: transcript, banner, input box, status bar and
//! overlays. Nothing here changes state.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{sampling_summary, App, Level};

/// Most lines the input box grows to.
const MAX_INPUT_LINES: usize = 6;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let input_h = app.input.lines().len().clamp(1, MAX_INPUT_LINES) as u16 + 2;
    let banner_h = u16::from(app.banner.is_some());
    let [transcript, banner, input, status] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(banner_h),
        Constraint::Length(input_h),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_transcript(f, transcript, app);
    if let Some((level, text)) = &app.banner {
        let style = match level {
            Level::Info => Style::new().fg(Color::Black).bg(Color::Cyan),
            Level::Warning => Style::new().fg(Color::Black).bg(Color::Yellow),
            Level::Error => Style::new().fg(Color::White).bg(Color::Red),
        };
        f.render_widget(Paragraph::new(format!(" {text}")).style(style), banner);
    }
    draw_input(f, input, app);
    f.render_widget(status_line(app), status);
    if let Some(o) = &app.overlay {
        let area = centered(f.area(), 90, 80);
        f.render_widget(Clear, area);
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" {} (Esc to close) ", o.title));
        f.render_widget(
            Paragraph::new(o.body.as_str())
                .block(block)
                .wrap(Wrap { trim: false }),
            area,
        );
    }
}

fn centered(area: Rect, pct_w: u16, pct_h: u16) -> Rect {
    let w = area.width * pct_w / 100;
    let h = area.height * pct_h / 100;
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Greedy word wrap by characters; words longer than the width are split.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split_inclusive(' ') {
            // A trailing space may hang past the edge; only the word itself must fit.
            let wlen = word.trim_end_matches(' ').chars().count();
            if len + wlen > width && len > 0 {
                out.push(std::mem::take(&mut line).trim_end().to_string());
                len = 0;
            }
            let mut rest = word;
            while rest.chars().count() > width {
                let cut = rest
                    .char_indices()
                    .nth(width)
                    .map_or(rest.len(), |(i, _)| i);
                out.push(rest[..cut].to_string());
                rest = &rest[cut..];
            }
            line.push_str(rest);
            len += rest.chars().count();
        }
        out.push(line.trim_end().to_string());
    }
    out
}

/// The transcript as styled, wrapped lines.
fn transcript_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let reasoning_style = Style::new()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC);
    let mut push_message = |role: &str, text: &str, reasoning: &str, streaming: bool| {
        let (label, style) = match role {
            "user" => (
                "You",
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            ),
            "assistant" => (
                "Assistant",
                Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
            ),
            _ => (
                "System",
                Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
            ),
        };
        lines.push(Line::from(Span::styled(label.to_string(), style)));
        if !reasoning.is_empty() {
            let words = reasoning.split_whitespace().count();
            let (mark, verb) = match app.show_reasoning {
                true => ("▾", "hides"),
                false => ("▸", "shows"),
            };
            let head = format!("{mark} reasoning ({words} words) · Ctrl+R {verb} it");
            lines.push(Line::from(Span::styled(head, reasoning_style)));
            if app.show_reasoning {
                for w in wrap(reasoning.trim(), width.saturating_sub(2)) {
                    lines.push(Line::from(Span::styled(format!("  {w}"), reasoning_style)));
                }
            }
        }
        let body_style = if role == "system" {
            Style::new().fg(Color::Gray).add_modifier(Modifier::ITALIC)
        } else {
            Style::new()
        };
        let code_style = Style::new().fg(Color::Yellow).bg(Color::Rgb(30, 30, 30));
        let mut in_code = false;
        let text = if streaming {
            format!("{text}▍")
        } else {
            text.to_string()
        };
        for raw in text.split('\n') {
            let fence = raw.trim_start().starts_with("```");
            if fence || in_code {
                for w in wrap(raw, width.saturating_sub(2)) {
                    lines.push(Line::from(Span::styled(format!("│ {w}"), code_style)));
                }
                if fence {
                    in_code = !in_code;
                }
            } else {
                for w in wrap(raw, width) {
                    lines.push(Line::from(Span::styled(w, body_style)));
                }
            }
        }
        lines.push(Line::default());
    };
    if let Some(s) = &app.system {
        push_message("system", s, "", false);
    }
    for m in &app.messages {
        let thinking = m.extra.get("thinking").and_then(|t| t.as_str());
        push_message(&m.role, &m.content, thinking.unwrap_or_default(), false);
    }
    match (&app.reply, app.reasoning) {
        (Some(r), Some(format)) => {
            let p = crate::engine::reasoning::parse(format, r);
            push_message("assistant", &p.content, &p.reasoning, true);
        }
        (Some(r), None) => push_message("assistant", r, "", true),
        (None, _) => {}
    }
    lines
}

fn draw_transcript(f: &mut Frame, area: Rect, app: &App) {
    let lines = transcript_lines(app, area.width as usize);
    let height = area.height as usize;
    let max_scroll = lines.len().saturating_sub(height);
    let scroll = app.scroll.min(max_scroll);
    let start = lines.len().saturating_sub(height + scroll);
    let visible: Vec<Line> = lines.into_iter().skip(start).take(height).collect();
    if visible.is_empty() {
        let hint = Paragraph::new(format!(
            "Chatting with {}. Type a message and press Enter; /help lists commands.",
            app.card.name
        ))
        .style(Style::new().fg(Color::DarkGray))
        .wrap(Wrap { trim: true });
        f.render_widget(hint, area);
    } else {
        f.render_widget(Paragraph::new(visible), area);
    }
}

fn draw_input(f: &mut Frame, area: Rect, app: &App) {
    let title = if app.busy() {
        " generating… Esc stops "
    } else {
        " message · Enter sends · Alt+Enter newline · /help "
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    let all = app.input.lines();
    let (row, col) = app.input.cursor();
    let first = (row + 1).saturating_sub(inner.height as usize);
    let shown: Vec<Line> = all
        .iter()
        .skip(first)
        .take(inner.height as usize)
        .map(|l| Line::from(l.to_string()))
        .collect();
    f.render_widget(Paragraph::new(shown).block(block), area);
    if app.overlay.is_none() {
        let x = inner.x + (col as u16).min(inner.width.saturating_sub(1));
        let y = inner.y + (row - first) as u16;
        f.set_cursor_position(Position::new(x, y));
    }
}

fn status_line(app: &App) -> Paragraph<'static> {
    let used = app.ctx_used;
    let size = app.card.ctx_size.max(1);
    let ctx_style = match used * 100 / size {
        95.. => Style::new().fg(Color::White).bg(Color::Red),
        80.. => Style::new().fg(Color::Black).bg(Color::Yellow),
        _ => Style::new(),
    };
    let speed = match app.stats.last() {
        Some(s) => format!(
            " pp {:.1} tok/s · tg {:.1} tok/s ",
            s.prompt_tok_per_s, s.gen_tok_per_s
        ),
        None => " pp – · tg – ".to_string(),
    };
    let sep = Span::styled("│", Style::new().fg(Color::DarkGray));
    Paragraph::new(Line::from(vec![
        Span::styled(
            format!(" {} ", app.card.name),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        sep.clone(),
        Span::raw(format!(" {} ", app.card.device)),
        sep.clone(),
        Span::styled(format!(" ctx {used}/{} ", app.card.ctx_size), ctx_style),
        sep.clone(),
        Span::raw(speed),
        sep,
        Span::styled(
            format!(" {}", sampling_summary(&app.params)),
            Style::new().fg(Color::DarkGray),
        ),
    ]))
    .style(Style::new().bg(Color::Rgb(40, 40, 40)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(
            wrap("the quick brown fox", 9),
            vec!["the quick", "brown fox"]
        );
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\n\nb", 10), vec!["a", "", "b"]);
    }
}
