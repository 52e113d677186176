//! `streamhouse sql`: statements from `-c`, or an interactive shell with
//! line editing and history (`~/.streamhouse_history`). A statement ends
//! at a `;` outside quotes and comments; `\q` quits.

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::client::Client;
use super::output::Format;
use super::show;

/// The statements of `text`: split at `;` outside quotes and comments,
/// blank ones dropped.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // A comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            current.push('\n');
                            break;
                        }
                    }
                }
                ';' => out.push(std::mem::take(&mut current)),
                _ => current.push(c),
            },
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `text` ends a statement (a `;` outside quotes at its end).
fn complete(text: &str) -> bool {
    let trimmed = text.trim_end();
    trimmed.ends_with(';')
        && split_statements(trimmed).len() == split_statements(&format!("{trimmed} x")).len() - 1
}

pub async fn interactive(client: &Client, format: Format) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".streamhouse_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("StreamHouse SQL shell. End statements with ; — \\q quits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "streamhouse> "
        } else {
            "        ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if buffer.is_empty() && matches!(line.trim(), "\\q" | "quit" | "exit") {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !complete(&buffer) {
                    continue;
                }
                let _ = editor.add_history_entry(buffer.trim());
                for statement in split_statements(&buffer) {
                    let started = streamhouse_log::Stopwatch::start();
                    match client.run(&statement).await {
                        Ok(outcome) => {
                            show(outcome, format)?;
                            println!("({:.3} s)", started.elapsed().as_secs_f64());
                        }
                        Err(e) => println!("ERROR: {e:#}"),
                    }
                }
                buffer.clear();
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        assert_eq!(
            split_statements("SELECT 'a;b'; -- c;d\nSELECT \"x;y\" FROM t;;  "),
            vec!["SELECT 'a;b'", "SELECT \"x;y\" FROM t"]
        );
        assert!(complete("SELECT 1;\n"));
        assert!(!complete("SELECT ';\n"));
        assert!(!complete("SELECT 1\n"));
    }
}
