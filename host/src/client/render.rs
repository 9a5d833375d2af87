//! What commands print: the response body as the API gave it (`--output json`), or
//! aligned tables and name–value blocks for people. Everything printed for people
//! passes through [`clean`]: the text is the server's, and a terminal must not take
//! escape sequences from it.

use super::http::{Answer, Error};
use serde_json::Value;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables for people.
    Table,
    /// The response body exactly as the API gave it, for scripts.
    Json,
}

impl Output {
    /// Prints `answer`: its body, or what `view` makes of it as JSON.
    pub fn print(self, answer: &Answer, view: impl FnOnce(&Value) -> String) -> Result<(), Error> {
        match self {
            Output::Json => print_raw(&answer.body),
            Output::Table => emit(&view(&answer.json()?)),
        }
    }
}

/// Writes `bytes` to stdout as one line.
pub fn print_raw(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    let mut written = stdout.write_all(bytes);
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        written = written.and_then(|()| stdout.write_all(b"\n"));
    }
    finish(written.and_then(|()| stdout.flush()))
}

/// Writes `text` to stdout, ending it with a newline.
pub fn emit(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{}", text.trim_end_matches('\n')).and_then(|()| stdout.flush());
    finish(written)
}

/// A reader that went away (`| head`) is not a failure of the command.
fn finish(written: std::io::Result<()>) -> Result<(), Error> {
    match written {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Local(format!("cannot write to stdout: {err}")))
        }
        _ => Ok(()),
    }
}

/// Columns under a header, each as wide as its widest cell, two spaces apart.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; cells are cleaned and kept to one line.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|cell| one_line(cell)).collect());
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|name| (*name).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let mut widths = vec![0; self.header.len()];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line.iter()) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in lines {
            let mut written = String::new();
            for (cell, width) in line.iter().zip(&widths) {
                written.push_str(&format!("{cell:<width$}  "));
            }
            text.push_str(written.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Name–value lines with the values aligned; a section of a bigger view.
pub fn fields(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, value) in fields {
        text.push_str(&format!("{name:<width$}  {}\n", one_line(value)));
    }
    text
}

/// Cells on one line, two spaces apart: a row printed as it comes, unaligned.
pub fn line(cells: &[String]) -> String {
    cells.iter().map(|cell| one_line(cell)).collect::<Vec<_>>().join("  ")
}

/// A JSON value as a cell: strings bare, `null` as `-`, lists of scalars joined,
/// anything else as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.iter().all(|item| !item.is_array() && !item.is_object()) => {
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// `value[name]` as a cell.
pub fn field(value: &Value, name: &str) -> String {
    text(&value[name])
}

/// The array `value[name]`, or none.
pub fn items<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value[name].as_array().map_or(&[], Vec::as_slice)
}

fn one_line(text: &str) -> String {
    clean(text).replace('\n', " ")
}

/// `text` with control characters other than newlines replaced, so that what the
/// server sent cannot move the cursor or recolour the terminal.
pub fn clean(text: &str) -> String {
    text.chars().map(|char| if char.is_control() && char != '\n' { '\u{fffd}' } else { char }).collect()
}
