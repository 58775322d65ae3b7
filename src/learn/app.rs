//! The menu's state machine: a stack of pages (modules, lessons, a lesson's
//! actions, and the run / explain / code views), the keys that move between
//! them, and the lesson runs in flight. It knows nothing about terminals, so
//! the interactive loop and the scripted one (tests) drive the same code.

use crate::lessons::{Entry, Module};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::text::Line;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

/// The actions on a lesson, in menu order.
pub const ACTIONS: [&str; 4] = [
    "Run it: naive against optimal, measured",
    "Explain: what it shows and the numbers to look at",
    "View the code",
    "Back",
];

/// A page of the menu. Indices point into [`App::modules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Modules,
    Lessons { module: usize },
    Actions { module: usize, lesson: usize },
    Run { module: usize, lesson: usize },
    Explain { module: usize, lesson: usize },
    Code { module: usize, lesson: usize },
}

impl Page {
    /// The lesson this page is about, if any.
    pub fn lesson(self) -> Option<(usize, usize)> {
        match self {
            Page::Modules | Page::Lessons { .. } => None,
            Page::Actions { module, lesson }
            | Page::Run { module, lesson }
            | Page::Explain { module, lesson }
            | Page::Code { module, lesson } => Some((module, lesson)),
        }
    }

    /// Pages that show text to scroll rather than a list to pick from.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Page::Run { .. } | Page::Explain { .. } | Page::Code { .. }
        )
    }
}

/// A lesson run: in flight on its own thread, or finished.
pub enum RunState {
    Running {
        started: Instant,
        result: mpsc::Receiver<Result<String, String>>,
    },
    Done {
        text: String,
        secs: f64,
    },
    Failed {
        error: String,
        secs: f64,
    },
}

/// Everything the menu shows and remembers.
pub struct App {
    pub modules: Vec<Module>,
    /// The pages opened so far; the last one is on screen.
    pub stack: Vec<Page>,
    /// Per page of `stack`: the selected item of a list, or the first line
    /// shown of a text view.
    pub cursor: Vec<usize>,
    /// Digits typed so far on a list page (for items 10 and up).
    pub digits: String,
    /// A one-line message for the footer (cleared by the next key).
    pub status: String,
    pub seed: u64,
    pub runs: HashMap<&'static str, RunState>,
    /// Syntax-highlighted source, per lesson, made on first view.
    pub code: HashMap<&'static str, Vec<Line<'static>>>,
    /// Lines of the text view as last drawn, and the rows it had on screen:
    /// the view stores them so scrolling stops at the end.
    pub text_lines: usize,
    pub text_rows: usize,
    pub quit: bool,
}

impl App {
    pub fn new(modules: Vec<Module>, seed: u64) -> Self {
        Self {
            modules,
            stack: vec![Page::Modules],
            cursor: vec![0],
            digits: String::new(),
            status: String::new(),
            seed,
            runs: HashMap::new(),
            code: HashMap::new(),
            text_lines: 0,
            text_rows: 0,
            quit: false,
        }
    }

    pub fn page(&self) -> Page {
        *self.stack.last().expect("the modules page is never popped")
    }

    pub fn cursor(&self) -> usize {
        *self.cursor.last().expect("one cursor per page")
    }

    fn set_cursor(&mut self, value: usize) {
        *self.cursor.last_mut().expect("one cursor per page") = value;
    }

    pub fn entry(&self, module: usize, lesson: usize) -> &Entry {
        &self.modules[module].lessons[lesson]
    }

    /// How many items the current list page has (0 on text pages).
    pub fn list_len(&self) -> usize {
        match self.page() {
            Page::Modules => self.modules.len(),
            Page::Lessons { module } => self.modules[module].lessons.len(),
            Page::Actions { .. } => ACTIONS.len(),
            _ => 0,
        }
    }

    /// Whether some lesson is still running.
    pub fn any_running(&self) -> bool {
        self.runs
            .values()
            .any(|r| matches!(r, RunState::Running { .. }))
    }

    /// Collects the results of runs that have finished.
    pub fn poll_runs(&mut self) {
        for state in self.runs.values_mut() {
            if let RunState::Running { started, result } = state {
                let secs = started.elapsed().as_secs_f64();
                let finished = match result.try_recv() {
                    Ok(Ok(text)) => RunState::Done { text, secs },
                    Ok(Err(error)) => RunState::Failed { error, secs },
                    Err(mpsc::TryRecvError::Empty) => continue,
                    Err(mpsc::TryRecvError::Disconnected) => RunState::Failed {
                        error: "the lesson stopped without a result".into(),
                        secs,
                    },
                };
                *state = finished;
            }
        }
    }

    /// Starts the lesson on its own thread, unless it is running already.
    fn start_run(&mut self, module: usize, lesson: usize) {
        let entry = self.entry(module, lesson).clone();
        if let Some(RunState::Running { .. }) = self.runs.get(entry.name) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let seed = self.seed;
        let name = entry.name;
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| entry.run(seed));
            let message = match outcome {
                Ok(Ok(report)) => Ok(report.table()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("the lesson panicked (a bug: please report it)".into()),
            };
            let _ = tx.send(message);
        });
        self.runs.insert(
            name,
            RunState::Running {
                started: Instant::now(),
                result: rx,
            },
        );
    }

    fn push(&mut self, page: Page) {
        self.stack.push(page);
        self.cursor.push(0);
        self.digits.clear();
    }

    fn back(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
            self.cursor.pop();
        }
        self.digits.clear();
    }

    /// Opens the selected item of a list page.
    fn open(&mut self) {
        let i = self.cursor();
        match self.page() {
            Page::Modules => self.push(Page::Lessons { module: i }),
            Page::Lessons { module } => self.push(Page::Actions { module, lesson: i }),
            Page::Actions { module, lesson } => match i {
                0 => {
                    self.start_run(module, lesson);
                    self.push(Page::Run { module, lesson });
                }
                1 => self.push(Page::Explain { module, lesson }),
                2 => self.push(Page::Code { module, lesson }),
                _ => self.back(),
            },
            _ => {}
        }
    }

    /// Moves the selection (lists) or the first line shown (text views).
    fn step(&mut self, delta: isize) {
        let last = if self.page().is_text() {
            self.text_lines.saturating_sub(self.text_rows.max(1))
        } else {
            self.list_len().saturating_sub(1)
        };
        let next = self.cursor().saturating_add_signed(delta).min(last);
        self.set_cursor(next);
    }

    /// A digit typed on a list page: selects that item, and opens it as soon
    /// as no longer number could start with the digits typed (so `3` opens
    /// item 3 of 9 at once, and `1` waits for `12` in a list of 15).
    fn digit(&mut self, d: char) {
        let n = self.list_len();
        if n == 0 {
            return;
        }
        let mut typed = format!("{}{d}", self.digits);
        let valid = |s: &str| s.parse::<usize>().is_ok_and(|v| (1..=n).contains(&v));
        if !valid(&typed) {
            typed = d.to_string();
        }
        if !valid(&typed) {
            self.digits.clear();
            self.status = format!("there is no item {d}: pick 1 to {n}");
            return;
        }
        let number: usize = typed.parse().expect("checked above");
        self.set_cursor(number - 1);
        if number * 10 > n {
            self.digits.clear();
            self.open();
        } else {
            self.digits = typed;
        }
    }

    /// One key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        self.status.clear();
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        // A terminal sends Esc and a key typed right after it as one
        // Alt+key: take it as both.
        if key.modifiers.contains(KeyModifiers::ALT) {
            if let KeyCode::Char(c) = key.code {
                self.back();
                return self.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
            }
        }
        let page_rows = self.text_rows.max(2) as isize - 1;
        match key.code {
            KeyCode::Char('q') | KeyCode::Char('Q') => self.quit = true,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('b') => self.back(),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::PageUp => self.step(-page_rows),
            KeyCode::PageDown | KeyCode::Char(' ') => self.step(page_rows),
            KeyCode::Home | KeyCode::Char('g') => self.set_cursor(0),
            KeyCode::End | KeyCode::Char('G') => self.step(isize::MAX / 2),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') if !self.page().is_text() => {
                self.digits.clear();
                self.open();
            }
            KeyCode::Char('r') => {
                if let Page::Run { module, lesson } = self.page() {
                    self.start_run(module, lesson);
                    self.set_cursor(0);
                }
            }
            KeyCode::Char(d) if d.is_ascii_digit() => self.digit(d),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(app: &mut App, code: KeyCode) {
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn typed(app: &mut App, keys: &str) {
        for c in keys.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    fn app() -> App {
        App::new(crate::lessons::modules(), 7)
    }

    #[test]
    fn numbers_open_at_once_unless_a_longer_number_could_follow() {
        let mut app = app();
        assert!(app.modules.len() < 10);
        typed(&mut app, "2");
        assert_eq!(app.page(), Page::Lessons { module: 1 });
        key(&mut app, KeyCode::Esc);
        // A module with ten lessons or more: `1` waits, `10` opens.
        let big = app
            .modules
            .iter()
            .position(|m| m.lessons.len() >= 10)
            .expect("a module with 10 lessons");
        typed(&mut app, &(big + 1).to_string());
        typed(&mut app, "1");
        assert_eq!(app.page(), Page::Lessons { module: big });
        assert_eq!((app.cursor(), app.digits.as_str()), (0, "1"));
        typed(&mut app, "0");
        assert_eq!(
            app.page(),
            Page::Actions {
                module: big,
                lesson: 9
            }
        );
        // No item 9 among four actions: a message, nothing opened.
        typed(&mut app, "9");
        assert_eq!(
            app.page(),
            Page::Actions {
                module: big,
                lesson: 9
            }
        );
        assert!(app.status.contains("no item 9"), "{}", app.status);
    }

    #[test]
    fn arrows_enter_back_and_quit() {
        let mut app = app();
        key(&mut app, KeyCode::Up);
        assert_eq!(app.cursor(), 0, "stops at the top");
        key(&mut app, KeyCode::End);
        assert_eq!(app.cursor(), app.modules.len() - 1);
        key(&mut app, KeyCode::Home);
        key(&mut app, KeyCode::Enter);
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Right);
        assert_eq!(
            app.page(),
            Page::Actions {
                module: 0,
                lesson: 1
            }
        );
        // Explain, then back to the actions with the cursor where it was.
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Enter);
        assert_eq!(
            app.page(),
            Page::Explain {
                module: 0,
                lesson: 1
            }
        );
        key(&mut app, KeyCode::Backspace);
        assert_eq!(
            (app.page(), app.cursor()),
            (
                Page::Actions {
                    module: 0,
                    lesson: 1
                },
                1
            )
        );
        // The `Back` action, then Esc at the top changes nothing.
        typed(&mut app, "4");
        assert_eq!(app.page(), Page::Lessons { module: 0 });
        for _ in 0..3 {
            key(&mut app, KeyCode::Esc);
        }
        assert_eq!((app.page(), app.stack.len()), (Page::Modules, 1));
        // Esc and a digit typed fast arrive as Alt+digit.
        typed(&mut app, "1");
        app.handle_key(KeyEvent::new(KeyCode::Char('3'), KeyModifiers::ALT));
        assert_eq!(app.page(), Page::Lessons { module: 2 });
        assert!(!app.quit);
        typed(&mut app, "q");
        assert!(app.quit);
    }

    #[test]
    fn text_views_scroll_within_their_lines() {
        let mut app = app();
        typed(&mut app, "113");
        assert!(app.page().is_text());
        app.text_lines = 50;
        app.text_rows = 20;
        key(&mut app, KeyCode::PageDown);
        assert_eq!(app.cursor(), 19);
        key(&mut app, KeyCode::End);
        assert_eq!(app.cursor(), 30, "the last screen ends at the last line");
        key(&mut app, KeyCode::Down);
        assert_eq!(app.cursor(), 30);
        typed(&mut app, "5");
        assert_eq!(app.cursor(), 30, "digits do nothing in a text view");
        key(&mut app, KeyCode::Home);
        assert_eq!(app.cursor(), 0);
    }

    #[test]
    fn a_run_ends_with_the_table_or_the_error() {
        let mut app = app();
        typed(&mut app, "111");
        assert_eq!(
            app.page(),
            Page::Run {
                module: 0,
                lesson: 0
            }
        );
        let name = app.entry(0, 0).name;
        let started = Instant::now();
        while app.any_running() {
            assert!(started.elapsed().as_secs() < 120, "{name} still running");
            std::thread::sleep(std::time::Duration::from_millis(10));
            app.poll_runs();
        }
        match &app.runs[name] {
            RunState::Done { text, .. } => {
                assert!(text.contains("naive") && text.contains("optimal"), "{text}")
            }
            RunState::Failed { error, .. } => panic!("{name} failed: {error}"),
            RunState::Running { .. } => unreachable!(),
        }
    }
}
