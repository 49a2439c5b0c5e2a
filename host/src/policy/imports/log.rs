//! `log`: the guest's lines into the host's log, bounded per request.

use wasmtime::component::{HasData, Linker};

use crate::policy::request::RequestState;
use crate::wit::log;

/// Log lines one request may write; a flood beyond is dropped (and counted).
const MAX_LOG_LINES_PER_REQUEST: u32 = 32;
/// Longer log messages are cut.
const MAX_LOG_LINE_BYTES: usize = 1024;

pub struct LogHost<'a> {
    request_id: &'a str,
    lines: &'a mut u32,
}

struct Log;

impl HasData for Log {
    type Data<'a> = LogHost<'a>;
}

pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, Log>(linker, |state| LogHost {
        request_id: &state.request_id,
        lines: &mut state.log_lines,
    })
}

impl log::Host for LogHost<'_> {
    async fn log(&mut self, level: log::Level, message: String) {
        *self.lines += 1;
        if *self.lines > MAX_LOG_LINES_PER_REQUEST {
            if *self.lines == MAX_LOG_LINES_PER_REQUEST + 1 {
                tracing::warn!(
                    request_id = self.request_id,
                    "guest log flood: further lines of this request dropped"
                );
            }
            return;
        }
        let message = printable(truncate(&message, MAX_LOG_LINE_BYTES));
        let id = self.request_id;
        match level {
            log::Level::Debug => tracing::debug!(target: "guest", request_id = id, "{message}"),
            log::Level::Info => tracing::info!(target: "guest", request_id = id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "guest", request_id = id, "{message}"),
            log::Level::Error => tracing::error!(target: "guest", request_id = id, "{message}"),
        }
    }
}

/// The guest's text with control characters escaped (`\n`, `\u{1b}`): the
/// message is printed as is in the text format, and a line break or a
/// terminal escape in it could forge or hide a log line.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            printable("connected: stored 2 record(s)"),
            "connected: stored 2 record(s)"
        );
        assert_eq!(
            printable("a\n2099-01-01 FORGED\u{1b}[31mé"),
            "a\\n2099-01-01 FORGED\\u{1b}[31mé"
        );
    }
}
