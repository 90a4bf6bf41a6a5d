//! Confirmation before destructive commands, as headscale asks: only when a person is at a
//! terminal (scripts and pipes are never blocked) and never with `--force`.

use anyhow::bail;
use std::io::{BufRead, IsTerminal, Write};

/// Asks `question` on the terminal; an answer other than yes stops the command (nothing is
/// changed). Without a terminal on stdin, or with `--force`, it does not ask.
pub fn confirm(force: bool, question: &str) -> anyhow::Result<()> {
    if force || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if is_yes(&answer) {
        Ok(())
    } else {
        bail!("aborted: nothing was changed (pass --force to skip this question)")
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_yes_is_yes() {
        for yes in ["y", "Y", "yes", " YES\n"] {
            assert!(super::is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "sure"] {
            assert!(!super::is_yes(no), "{no:?}");
        }
    }
}
