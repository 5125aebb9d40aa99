//! The progress bar of every long-running command (a backup, a restore, a
//! load generator's run and preload): one look for all of them, drawn on
//! stderr, and none at all when stderr is not a terminal (a pipe, a log
//! file, CI), so scripts read clean output.

use std::io::IsTerminal;

/// A bar of `length` steps drawn with `template` (indicatif's template
/// language), or `None` when it is not `wanted` (`--json`) or stderr is not
/// a terminal.
pub fn bar(wanted: bool, length: u64, template: &str) -> Option<indicatif::ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).expect("progress template").progress_chars("=> "),
    );
    Some(bar)
}
