//! `cmk audit tail`: the last security events of the application's file and this tool's,
//! merged by time; `--follow` keeps printing new ones. Events not yet delivered wait in the
//! spools and reach these files when their writer next runs.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::exit::{CliError, CliResult, Exit};
use crate::home::{APP_EVENTS, CLI_EVENTS, Paths};
use crate::scan::Stop;

/// A file being followed: where its next line starts.
struct Followed {
    path: PathBuf,
    offset: u64,
}

pub(crate) async fn tail(
    paths: &Paths,
    json: bool,
    lines: usize,
    follow: bool,
    tenant: Option<&str>,
    stop: &Stop,
) -> CliResult {
    let mut files: Vec<Followed> = [APP_EVENTS, CLI_EVENTS]
        .iter()
        .map(|name| Followed {
            path: paths.dir.join(name),
            offset: 0,
        })
        .collect();
    if !files.iter().any(|f| f.path.exists()) && !follow {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "no event file in {} (is --home right?)",
                paths.dir.display()
            ),
        ));
    }
    let mut events = Vec::new();
    for f in &mut files {
        events.extend(read_new(f)?);
    }
    events.retain(|e| matches_tenant(e, tenant));
    events.sort_by_key(|e| e["timestamp_ms"].as_u64().unwrap_or(0));
    let skip = events.len().saturating_sub(lines);
    for e in &events[skip..] {
        show(json, e);
    }
    while follow && !stop.requested() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut new = Vec::new();
        for f in &mut files {
            new.extend(read_new(f)?);
        }
        new.retain(|e| matches_tenant(e, tenant));
        new.sort_by_key(|e| e["timestamp_ms"].as_u64().unwrap_or(0));
        for e in &new {
            show(json, e);
        }
    }
    Ok(())
}

fn matches_tenant(e: &Value, tenant: Option<&str>) -> bool {
    tenant.is_none_or(|t| e["tenant"].as_str() == Some(t))
}

/// The whole lines appended to `f` since the last read (a line still being written waits).
fn read_new(f: &mut Followed) -> CliResult<Vec<Value>> {
    let file = match std::fs::File::open(&f.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::file(&f.path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| CliError::file(&f.path, e))?
        .len();
    if len < f.offset {
        // Rotated: start the new file from its beginning.
        f.offset = 0;
    }
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(f.offset))
        .map_err(|e| CliError::file(&f.path, e))?;
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| CliError::file(&f.path, e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        f.offset += n as u64;
        // A torn line a killed writer left is skipped: its event is delivered again whole.
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            out.push(event);
        }
    }
    Ok(out)
}

fn show(json: bool, e: &Value) {
    if json {
        println!("{e}");
        return;
    }
    let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let outcome = match e["outcome"]["status"].as_str() {
        Some("success") => "ok".to_string(),
        _ => format!("FAILED {}", e["outcome"]["error"].as_str().unwrap_or("")),
    };
    println!(
        "{} {:<28} tenant={} actor={} {}",
        e["timestamp_ms"]
            .as_u64()
            .map_or("-".into(), |ms| ms.to_string()),
        text("name"),
        text("tenant"),
        text("actor"),
        outcome
    );
}
