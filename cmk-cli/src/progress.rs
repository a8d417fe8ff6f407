//! Progress of a job over a table: a bar on a terminal, a line every few seconds otherwise
//! (logs and CI keep a readable record).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(2);

pub(crate) enum Progress {
    Bar(ProgressBar),
    Lines {
        label: String,
        total: u64,
        done: u64,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    /// Progress of `label` over `total` rows, on standard error.
    pub(crate) fn new(label: String, total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} rows, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label);
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Lines {
                label,
                total,
                done: 0,
                started: now,
                last: now,
            }
        }
    }

    pub(crate) fn advance(&mut self, rows: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(rows),
            Progress::Lines {
                label,
                total,
                done,
                started,
                last,
            } => {
                *done += rows;
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", line(label, *done, *total, started.elapsed()));
                }
            }
        }
    }

    pub(crate) fn finish(self) {
        match self {
            Progress::Bar(bar) => bar.finish(),
            Progress::Lines {
                label,
                total,
                done,
                started,
                ..
            } => eprintln!("{}", line(&label, done, total, started.elapsed())),
        }
    }
}

fn line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let left = total.saturating_sub(done) as f64 / rate.max(1e-9);
    format!("{label}: {done}/{total} rows, {rate:.0} rows/s, {left:.0} s left")
}
