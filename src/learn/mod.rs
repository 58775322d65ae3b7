//! `sdlab learn`: the lesson menu in the terminal. Pick a module, then a
//! lesson, then run it (the experiment's table), read what it shows, or read
//! its code. Arrow keys or typed numbers choose, enter opens, esc goes back,
//! `q` quits.
//!
//! `--keys` drives the same menu from a script instead of the keyboard and
//! prints the screens (`dump`), which is how the tests walk it.

mod app;
mod highlight;
mod view;

use anyhow::{bail, Context, Result};
use app::App;
use clap::Args;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct LearnArgs {
    /// Seed of every experiment's input.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Drive the menu from a script instead of the keyboard: keys separated
    /// by spaces (a character, a number, or enter, esc, up, down, left,
    /// right, pgup, pgdn, home, end, backspace), plus `wait` (until running
    /// lessons finish) and `dump` (print the screen). The last screen is
    /// printed at the end.
    #[arg(long, value_name = "KEYS")]
    keys: Option<String>,
    /// Screen size for `--keys`, as COLUMNSxROWS.
    #[arg(long, default_value = "110x40", value_parser = parse_size)]
    size: (u16, u16),
    /// Longest `wait` of a script, in seconds.
    #[arg(long, default_value_t = 300)]
    wait_timeout: u64,
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}`: expected COLUMNSxROWS, e.g. 110x40"))?;
    let parse = |v: &str| {
        v.parse::<u16>()
            .ok()
            .filter(|n| *n >= 20)
            .ok_or_else(|| format!("`{v}` is not a size of at least 20"))
    };
    Ok((parse(w)?, parse(h)?))
}

pub fn run(a: LearnArgs) -> Result<()> {
    let app = App::new(crate::lessons::modules(), a.seed);
    match a.keys {
        Some(keys) => scripted(app, &keys, a.size, Duration::from_secs(a.wait_timeout)),
        None => {
            if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
                bail!(
                    "sdlab learn is an interactive menu and needs a terminal; \
                     `sdlab lesson list` and `sdlab lesson NAME` run lessons without one, \
                     and `--keys` scripts the menu"
                );
            }
            interactive(app)
        }
    }
}

fn interactive(mut app: App) -> Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> Result<()> {
        while !app.quit {
            terminal.draw(|f| view::draw(f, &mut app))?;
            if event::poll(Duration::from_millis(100))? {
                if let Event::Key(key) = event::read()? {
                    app.handle_key(key);
                }
            }
            app.poll_runs();
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

/// One step of a `--keys` script.
#[derive(Debug, PartialEq)]
enum Step {
    Key(KeyCode),
    Wait,
    Dump,
}

fn parse_script(script: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for token in script.split_whitespace() {
        let key = match token.to_ascii_lowercase().as_str() {
            "wait" => {
                steps.push(Step::Wait);
                continue;
            }
            "dump" => {
                steps.push(Step::Dump);
                continue;
            }
            "enter" => KeyCode::Enter,
            "esc" => KeyCode::Esc,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pgup" => KeyCode::PageUp,
            "pgdn" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "backspace" => KeyCode::Backspace,
            _ if token.chars().all(|c| c.is_ascii_digit()) => {
                steps.extend(token.chars().map(|c| Step::Key(KeyCode::Char(c))));
                continue;
            }
            _ if token.chars().count() == 1 => {
                KeyCode::Char(token.chars().next().expect("one char"))
            }
            _ => bail!("unknown key `{token}` in --keys"),
        };
        steps.push(Step::Key(key));
    }
    Ok(steps)
}

fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let row: String = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

fn scripted(mut app: App, script: &str, size: (u16, u16), wait_limit: Duration) -> Result<()> {
    let steps = parse_script(script)?;
    let mut terminal = Terminal::new(TestBackend::new(size.0, size.1))?;
    let draw = |app: &mut App, terminal: &mut Terminal<TestBackend>| -> Result<()> {
        app.poll_runs();
        terminal.draw(|f| view::draw(f, app))?;
        Ok(())
    };
    draw(&mut app, &mut terminal)?;
    for step in steps {
        if app.quit {
            break;
        }
        match step {
            Step::Key(code) => app.handle_key(KeyEvent::new(code, KeyModifiers::NONE)),
            Step::Wait => {
                let started = Instant::now();
                while app.any_running() {
                    if started.elapsed() > wait_limit {
                        bail!("a lesson was still running after {wait_limit:?}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    app.poll_runs();
                }
            }
            Step::Dump => {
                draw(&mut app, &mut terminal)?;
                println!("--- screen ---\n{}", screen_text(&terminal));
                continue;
            }
        }
        draw(&mut app, &mut terminal).context("drawing the menu")?;
    }
    println!("--- screen ---\n{}", screen_text(&terminal));
    if app.quit {
        println!("--- quit ---");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_into_keys() {
        let steps = parse_script("2 12 enter esc wait dump q").unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Key(KeyCode::Char('2')),
                Step::Key(KeyCode::Char('1')),
                Step::Key(KeyCode::Char('2')),
                Step::Key(KeyCode::Enter),
                Step::Key(KeyCode::Esc),
                Step::Wait,
                Step::Dump,
                Step::Key(KeyCode::Char('q')),
            ]
        );
        assert!(parse_script("enterr").is_err());
        assert_eq!(parse_size("80x24"), Ok((80, 24)));
        assert!(parse_size("80").is_err() && parse_size("5x5").is_err());
    }
}
