//! Rust source as coloured terminal lines: syntect's Rust grammar and one of
//! its bundled themes, turned into ratatui spans (foreground colours only,
//! so the terminal's own background stays).

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use std::sync::OnceLock;
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, Theme, ThemeSet};
use syntect::parsing::SyntaxSet;
use syntect::util::LinesWithEndings;

fn assets() -> &'static (SyntaxSet, Theme) {
    static ASSETS: OnceLock<(SyntaxSet, Theme)> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let syntaxes = SyntaxSet::load_defaults_newlines();
        let mut themes = ThemeSet::load_defaults().themes;
        let theme = themes
            .remove("base16-ocean.dark")
            .or_else(|| themes.into_values().next())
            .unwrap_or_default();
        (syntaxes, theme)
    })
}

/// Highlights `src` as Rust, one [`Line`] per source line, each prefixed by
/// its line number. Falls back to plain text for a line the grammar cannot
/// handle.
pub fn rust_lines(src: &str) -> Vec<Line<'static>> {
    let (syntaxes, theme) = assets();
    let syntax = syntaxes
        .find_syntax_by_extension("rs")
        .unwrap_or_else(|| syntaxes.find_syntax_plain_text());
    let mut highlighter = HighlightLines::new(syntax, theme);
    let number = Style::default().fg(Color::DarkGray);
    LinesWithEndings::from(src)
        .enumerate()
        .map(|(i, line)| {
            let mut spans = vec![Span::styled(format!("{:>4}  ", i + 1), number)];
            match highlighter.highlight_line(line, syntaxes) {
                Ok(ranges) => spans.extend(ranges.into_iter().map(|(style, text)| {
                    let c = style.foreground;
                    let mut s = Style::default().fg(Color::Rgb(c.r, c.g, c.b));
                    if style.font_style.contains(FontStyle::BOLD) {
                        s = s.add_modifier(Modifier::BOLD);
                    }
                    if style.font_style.contains(FontStyle::ITALIC) {
                        s = s.add_modifier(Modifier::ITALIC);
                    }
                    Span::styled(text.trim_end_matches(['\n', '\r']).to_string(), s)
                })),
                Err(_) => spans.push(Span::raw(line.trim_end().to_string())),
            }
            Line::from(spans)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_every_line_and_its_text_and_colours_keywords() {
        let src = "fn main() {\n    let x = 1; // one\n}\n";
        let lines = super::rust_lines(src);
        assert_eq!(lines.len(), 3);
        let text: Vec<String> = lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect();
        assert_eq!(text[1], "   2      let x = 1; // one");
        let colours: std::collections::HashSet<_> =
            lines[1].spans.iter().skip(1).map(|s| s.style.fg).collect();
        assert!(
            colours.len() > 1,
            "one colour for a whole line: {colours:?}"
        );
    }
}
