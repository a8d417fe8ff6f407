//! `cmk audit tail`: the last security events of the application's file and this tool's,
//! and those still waiting in their spools (not delivered yet: the sink was down or the
//! writer stopped first), merged by time; `--follow` keeps printing new ones. An event is
//! printed once, even when it is in a spool and its file at once (delivery is at least once);
//! a spooled one is marked `"delivery":"spooled"`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::exit::{CliError, CliResult, Exit};
use crate::home::{APP_EVENTS, APP_SPOOL, CLI_EVENTS, CLI_SPOOL, Paths};
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
    let spools_exist = [APP_SPOOL, CLI_SPOOL]
        .iter()
        .any(|n| paths.dir.join(n).exists());
    if !files.iter().any(|f| f.path.exists()) && !spools_exist && !follow {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "no event file in {} (is --home right?)",
                paths.dir.display()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for f in &mut files {
        events.extend(read_new(f)?);
    }
    events.extend(spooled(paths)?);
    let mut events = unseen(events, &mut seen, tenant);
    let skip = events.len().saturating_sub(lines);
    for e in events.drain(skip..) {
        show(json, &e);
    }
    while follow && !stop.requested() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut new = Vec::new();
        for f in &mut files {
            new.extend(read_new(f)?);
        }
        new.extend(spooled(paths)?);
        for e in unseen(new, &mut seen, tenant) {
            show(json, &e);
        }
    }
    Ok(())
}

/// The events not printed yet (by id) of `tenant`, by time; the ids are recorded as printed.
fn unseen(mut events: Vec<Value>, seen: &mut HashSet<String>, tenant: Option<&str>) -> Vec<Value> {
    // A delivered copy comes first, so it is the one kept.
    events.sort_by_key(|e| e.get("delivery").is_some());
    events.retain(|e| {
        matches_tenant(e, tenant) && seen.insert(e["id"].as_str().unwrap_or_default().to_string())
    });
    events.sort_by_key(|e| e["timestamp_ms"].as_u64().unwrap_or(0));
    events
}

/// The events waiting in the application's spool and this tool's, read without their locks.
fn spooled(paths: &Paths) -> CliResult<Vec<Value>> {
    let mut out = Vec::new();
    for name in [APP_SPOOL, CLI_SPOOL] {
        let dir = paths.dir.join(name);
        let events = cmk_core::audit::spool::undelivered(&dir)
            .map_err(|e| CliError::new(Exit::Failure, format!("reading {}: {e}", dir.display())))?;
        for event in events {
            let mut line = Vec::new();
            cmk_core::audit::format::json_line(&event, &mut line);
            if let Ok(Value::Object(mut e)) = serde_json::from_slice::<Value>(&line) {
                e.insert("delivery".into(), Value::from("spooled"));
                out.push(Value::Object(e));
            }
        }
    }
    Ok(out)
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
    let spooled = if e.get("delivery").is_some() {
        " (spooled: not delivered yet)"
    } else {
        ""
    };
    println!(
        "{} {:<28} tenant={} actor={} {}{spooled}",
        e["timestamp_ms"]
            .as_u64()
            .map_or("-".into(), |ms| ms.to_string()),
        text("name"),
        text("tenant"),
        text("actor"),
        outcome
    );
}
