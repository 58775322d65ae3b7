//! Drawing the menu: a breadcrumb on top, the page in the middle (a
//! numbered list, or text to scroll), and the keys that work at the bottom.

use super::app::{App, Page, RunState, ACTIONS};
use super::highlight;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

const SPINNER: [char; 8] = ['|', '/', '-', '\\', '|', '/', '-', '\\'];

/// Draws the current page. Takes `&mut App` to record how much text the
/// page holds and how many rows it had, which bounds scrolling.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(breadcrumb(app))
            .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        top,
    );
    let page = app.page();
    if page.is_text() {
        draw_text(frame, app, body);
    } else {
        draw_list(frame, app, body);
    }
    frame.render_widget(
        Paragraph::new(footer(app)).style(Style::default().fg(Color::Gray)),
        bottom,
    );
}

fn breadcrumb(app: &App) -> String {
    let mut parts = vec!["sdlab learn".to_string()];
    for page in &app.stack {
        match *page {
            Page::Modules => {}
            Page::Lessons { module } => parts.push(app.modules[module].title.into()),
            Page::Actions { module, lesson } => parts.push(app.entry(module, lesson).name.into()),
            Page::Run { .. } => parts.push("run".into()),
            Page::Explain { .. } => parts.push("explain".into()),
            Page::Code { .. } => parts.push("code".into()),
        }
    }
    format!(" {}", parts.join(" > "))
}

fn footer(app: &App) -> String {
    if !app.status.is_empty() {
        return format!(" {}", app.status);
    }
    let keys = match app.page() {
        Page::Run { .. } => "up/down scroll  r run again  esc back  q quit",
        p if p.is_text() => "up/down pgup/pgdn scroll  esc back  q quit",
        Page::Modules => "up/down move  enter or a number: open  q quit",
        _ => "up/down move  enter or a number: open  esc back  q quit",
    };
    if app.digits.is_empty() {
        format!(" {keys}")
    } else {
        format!(" typed {}: enter opens it  |  {keys}", app.digits)
    }
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect) {
    let (title, items): (String, Vec<ListItem>) = match app.page() {
        Page::Modules => (
            " Modules ".into(),
            app.modules
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ListItem::new(Line::from(vec![
                        Span::styled(
                            format!("{:>2}. {}", i + 1, m.title),
                            Style::default().add_modifier(Modifier::BOLD),
                        ),
                        Span::styled(
                            format!("  ({} lessons) {}", m.lessons.len(), m.about),
                            Style::default().fg(Color::Gray),
                        ),
                    ]))
                })
                .collect(),
        ),
        Page::Lessons { module } => (
            format!(" {} ", app.modules[module].title),
            app.modules[module]
                .lessons
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    ListItem::new(Line::from(vec![
                        Span::styled(
                            format!("{:>2}. {:<22}", i + 1, e.name),
                            Style::default().add_modifier(Modifier::BOLD),
                        ),
                        Span::styled(format!(" {}", e.title), Style::default().fg(Color::Gray)),
                    ]))
                })
                .collect(),
        ),
        Page::Actions { module, lesson } => (
            format!(" {} ", app.entry(module, lesson).title),
            ACTIONS
                .iter()
                .enumerate()
                .map(|(i, a)| ListItem::new(format!("{}. {a}", i + 1)))
                .collect(),
        ),
        _ => unreachable!("text pages are drawn by draw_text"),
    };
    let list = List::new(items)
        .block(Block::bordered().title(title))
        .highlight_style(Style::default().fg(Color::Black).bg(Color::Cyan))
        .highlight_symbol("> ");
    let mut state = ListState::default().with_selected(Some(app.cursor()));
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_text(frame: &mut Frame, app: &mut App, area: Rect) {
    let Some((module, lesson)) = app.page().lesson() else {
        return;
    };
    let entry = app.entry(module, lesson).clone();
    let inner_width = area.width.saturating_sub(2).max(10) as usize;
    let rows = area.height.saturating_sub(2) as usize;
    let cursor = app.cursor();
    let (title, (top, total, visible)) = match app.page() {
        Page::Run { .. } => {
            let lines: Vec<Line<'static>> = run_lines(app, entry.name)
                .into_iter()
                .flat_map(|l| wrap_plain(l, inner_width))
                .collect();
            (
                format!(" {}: run{} ", entry.name, run_status(app, entry.name)),
                window(&lines, cursor, rows),
            )
        }
        Page::Explain { .. } => (
            format!(" {}: what it shows ", entry.name),
            window(&explain_lines(&entry.explain(), inner_width), cursor, rows),
        ),
        _ => {
            // Highlighted once per lesson; each frame copies only the
            // lines on screen.
            let code = app.code.entry(entry.name).or_insert_with(|| {
                let mut lines = Vec::new();
                for (path, src) in entry.sources() {
                    lines.push(Line::styled(
                        format!("// ---- {path} ----"),
                        Style::default().add_modifier(Modifier::BOLD),
                    ));
                    lines.extend(highlight::rust_lines(src));
                    lines.push(Line::raw(""));
                }
                lines
            });
            (
                format!(" {}: code ", entry.name),
                window(code, cursor, rows),
            )
        }
    };
    app.text_lines = total;
    app.text_rows = rows;
    let shown = format!(
        "{title}[lines {}-{} of {}] ",
        (top + 1).min(total),
        (top + rows).min(total),
        total
    );
    frame.render_widget(
        Paragraph::new(Text::from(visible)).block(Block::bordered().title(shown)),
        area,
    );
}

/// The lines a text view shows: from `cursor`, but never past the point
/// where the last line reaches the bottom. Returns the first line shown,
/// the number of lines, and copies of the `rows` lines on screen.
fn window(
    lines: &[Line<'static>],
    cursor: usize,
    rows: usize,
) -> (usize, usize, Vec<Line<'static>>) {
    let top = cursor.min(lines.len().saturating_sub(rows.max(1)));
    let end = (top + rows).min(lines.len());
    (top, lines.len(), lines[top..end].to_vec())
}

/// How the lesson's run stands, for the view's title (so it shows however
/// far the table is scrolled).
fn run_status(app: &App, name: &str) -> String {
    match app.runs.get(name) {
        Some(RunState::Done { secs, .. }) => format!(" (finished in {secs:.1} s)"),
        Some(RunState::Failed { secs, .. }) => format!(" (failed after {secs:.1} s)"),
        Some(RunState::Running { .. }) => " (running)".into(),
        None => String::new(),
    }
}

fn run_lines(app: &App, name: &str) -> Vec<Line<'static>> {
    match app.runs.get(name) {
        None => vec![Line::raw("not run yet: press r")],
        Some(RunState::Running { started, .. }) => {
            let secs = started.elapsed().as_secs_f64();
            let spin = SPINNER[(secs * 8.0) as usize % SPINNER.len()];
            vec![Line::raw(format!(
                "{spin} running {name} (seed {}): {secs:.1} s so far; esc goes back, the run goes on",
                app.seed
            ))]
        }
        Some(RunState::Done { text, secs }) => {
            let mut lines: Vec<Line> = text.lines().map(|l| Line::raw(l.to_string())).collect();
            if let Some(first) = lines.first_mut() {
                *first = Line::styled(
                    first.to_string(),
                    Style::default().add_modifier(Modifier::BOLD),
                );
            }
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                format!("finished in {secs:.1} s with seed {}", app.seed),
                Style::default().fg(Color::Gray),
            ));
            lines
        }
        Some(RunState::Failed { error, secs }) => vec![
            Line::styled(
                format!("the lesson failed after {secs:.1} s:"),
                Style::default().fg(Color::Red),
            ),
            Line::raw(error.clone()),
        ],
    }
}

/// A line longer than `width` split at spaces into several (keeping the
/// first span's style); shorter lines are left as they are.
fn wrap_plain(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    if line.width() <= width {
        return vec![line];
    }
    let style = line.spans.first().map(|s| s.style).unwrap_or_default();
    let text = line.to_string();
    let mut out = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            out.push(Line::styled(std::mem::take(&mut current), style));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push(Line::styled(current, style));
    out
}

/// The explanation, wrapped to `width`, with `**bold**` shown bold.
fn explain_lines(text: &str, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        let joined = paragraph
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let mut bold = false;
        let mut spans: Vec<Span<'static>> = Vec::new();
        let mut used = 0;
        for word in joined.split_whitespace() {
            if used > 0 && used + 1 + word.chars().count() > width {
                lines.push(Line::from(std::mem::take(&mut spans)));
                used = 0;
            }
            if used > 0 {
                spans.push(Span::raw(" "));
                used += 1;
            }
            // `**` may open or close bold anywhere in the word.
            for (i, piece) in word.split("**").enumerate() {
                if i > 0 {
                    bold = !bold;
                }
                if !piece.is_empty() {
                    let style = if bold {
                        Style::default().add_modifier(Modifier::BOLD)
                    } else {
                        Style::default()
                    };
                    spans.push(Span::styled(piece.to_string(), style));
                }
            }
            used += word.replace("**", "").chars().count();
        }
        lines.push(Line::from(spans));
        lines.push(Line::raw(""));
    }
    lines
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_window_shows_the_rows_from_the_cursor_and_stops_at_the_end() {
        let lines: Vec<ratatui::text::Line<'static>> = (0..10)
            .map(|i| ratatui::text::Line::raw(i.to_string()))
            .collect();
        let (top, total, shown) = super::window(&lines, 2, 4);
        assert_eq!((top, total, shown.len()), (2, 10, 4));
        assert_eq!(shown[0].to_string(), "2");
        let (top, _, shown) = super::window(&lines, 9, 4);
        assert_eq!((top, shown.len(), shown[3].to_string()), (6, 4, "9".into()));
        let (top, total, shown) = super::window(&lines[..3], 0, 4);
        assert_eq!((top, total, shown.len()), (0, 3, 3));
    }

    #[test]
    fn explain_wraps_within_the_width_and_makes_bold_spans() {
        let lines = super::explain_lines(
            "**The pattern.** one two three four five six seven\n\nnext",
            16,
        );
        for l in &lines {
            assert!(l.width() <= 16, "{l:?}");
        }
        assert_eq!(lines[0].spans[0].content, "The");
        assert!(lines[0].spans[0]
            .style
            .add_modifier
            .contains(ratatui::style::Modifier::BOLD));
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert!(text.contains(&"next".to_string()), "{text:?}");
    }
}
