//! Fuzz targets for every parser of stored bytes (issue 15 §2): a mutation fuzzer that builds
//! on the stable toolchain (no libFuzzer), one target per parser, each seeded with genuine
//! values and checking, beside "never panics", what the parser must never do:
//!
//! | target | parser | never |
//! | --- | --- | --- |
//! | `key_column` | `key_column::parse`, `parse_classic`, `listing` | accept bytes it would not write back the same |
//! | `field` | `field::parse`, `strip_inner`, a row unseal | read a changed ciphertext |
//! | `blind_index` | the index check of a row unseal | read a row whose index changed |
//! | `deterministic` | `search::deterministic_version`, the AES-SIV open of a row unseal | read a changed value |
//! | `registry_entry` | `RegistryEntry::try_from(RegistryRecord)`, the KMS unwrap of `wrapped` | unwrap a changed entry |
//! | `config_record` | `ConfigRecord::into_signed`, `ConfigVerifier::verify_loaded`, the JSON of `TenantConfig` | verify a changed record |
//! | `spool_record` | `parse_json_line`, `Spool::open` + `peek` over a damaged segment | (panic only) |
//!
//! `cargo test -p cmk-core --test fuzz` is the bounded smoke run CI makes (a few thousand
//! inputs per target, seconds). A long run, all targets or one:
//!
//! ```text
//! CMK_FUZZ_SECONDS=600 cargo test --release -p cmk-core --test fuzz
//! CMK_FUZZ_SECONDS=3600 CMK_FUZZ_TARGET=field CMK_FUZZ_SEED=42 cargo test --release -p cmk-core --test fuzz
//! ```
//!
//! A failure prints the target, the seed and the input in hex, writes the input to
//! `target/fuzz-failures/`, and exits non-zero; `CMK_FUZZ_SEED` replays a run.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use cmk_core::audit::format::{json_line, parse_json_line};
use cmk_core::crypto::search;
use cmk_core::format::aad::RowId;
use cmk_core::format::{field, key_column};
use cmk_core::kms::Kms;
use cmk_core::registry::{KeyRegistry, RegistryEntry, entry_context};
use cmk_core::sql::{ConfigRecord, RegistryRecord};
use cmk_core::tenant::{ConfigVerifier, OperatorKey, SignedTenantConfig};
use cmk_core::{TenantConfig, TenantId};

use common::{ALL, Fixture, Stored, doctor, patients};

/// A small, fast, seedable generator (SplitMix64): inputs, not keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// One to four mutations of a seed: bit flips, byte sets, insertions, deletions,
/// truncation, duplication of a range, a splice with another seed, or fresh random bytes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = b.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.byte();
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fresh: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                b.splice(at..at, fresh);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                b.drain(at..end);
            }
            4 => b.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let copy = b[at..end].to_vec();
                let to = rng.below(len + 1);
                b.splice(to..to, copy);
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            _ => b = (0..rng.below(300)).map(|_| rng.byte()).collect(),
        }
    }
    b
}

/// Genuine values, keys and a runtime, made once.
struct World {
    rt: tokio::runtime::Runtime,
    fx: Fixture,
    keys: std::sync::Arc<cmk_core::TenantKeys>,
    row: Stored,
    row_id: RowId,
    entries: Vec<RegistryEntry>,
    config: SignedTenantConfig,
    event_line: Vec<u8>,
    spool_dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fx = rt.block_on(Fixture::new(&["acme"]));
        let keys = rt.block_on(fx.cmk.keys_for(&doctor("acme"), &ALL)).unwrap();
        let row_id = RowId::Int(7);
        let values: [Option<&[u8]>; 4] = [
            Some(b"ann@example.com"),
            Some(b"Ann"),
            Some(b"123-45-6789"),
            Some(b"A7"),
        ];
        let sealed = keys.seal(&patients(), Some(&row_id), &values).unwrap();
        fx.sink.take();
        let tenant = TenantId::new("acme").unwrap();
        let entries = rt.block_on(fx.registry.entries(&tenant)).unwrap();
        let config = fx.configs.raw(&tenant).unwrap();
        let mut event_line = Vec::new();
        let event = cmk_core::event::SecurityEvent::new(
            &doctor("acme"),
            cmk_core::event::EventName::DataDecrypt,
            cmk_core::event::Outcome::Success,
        );
        json_line(&event, &mut event_line);
        World {
            rt,
            fx,
            keys,
            row: Stored::from_sealed("acme", &sealed),
            row_id,
            entries,
            config,
            event_line,
            spool_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn unseals(&self, row: &Stored) -> bool {
        row.with(Some(&self.row_id), |r| self.keys.unseal(&patients(), r))
            .is_ok()
    }
}

/// What a target checks besides "never panics": `Err` names a violated invariant.
type Check = fn(&World, &[u8]) -> Result<(), String>;

struct Target {
    name: &'static str,
    seeds: fn(&World) -> Vec<Vec<u8>>,
    check: Check,
    /// Inputs of the smoke run (heavier targets take fewer).
    smoke: usize,
}

fn key_column_target(_: &World, b: &[u8]) -> Result<(), String> {
    let _ = key_column::listing(b, "email");
    if let Ok(k) = key_column::parse(b) {
        let again = key_column::build(
            k.kek_id,
            k.kek_version,
            &k.nonce,
            &k.encrypted_dek,
            &k.tag,
            k.write_id.as_ref(),
            k.list_bytes,
        );
        if again != b {
            return Err("a parsed key column does not lay out to the same bytes".into());
        }
    }
    if let Ok(k) = key_column::parse_classic(b)
        && key_column::build_classic(k.kek_id, k.blob, k.write_id.as_ref(), k.list_bytes)
            .ok()
            .as_deref()
            != Some(b)
    {
        return Err("a parsed classic key column does not lay out to the same bytes".into());
    }
    Ok(())
}

/// Field `i` (or the index) of the genuine row replaced by `b`: reads only if unchanged.
fn row_with(
    w: &World,
    b: &[u8],
    place: fn(&mut Stored) -> &mut Option<Vec<u8>>,
) -> Result<(), String> {
    let mut row = w.row.clone();
    let slot = place(&mut row);
    let genuine = slot.as_deref() == Some(b);
    *slot = Some(b.to_vec());
    match (w.unseals(&row), genuine) {
        (true, false) => Err("a changed value read".into()),
        (false, true) => Err("the genuine value does not read".into()),
        _ => Ok(()),
    }
}

fn field_target(w: &World, b: &[u8]) -> Result<(), String> {
    let _ = field::parse(b);
    let mut inner = b.to_vec();
    let _ = field::strip_inner(&mut inner, b.first().copied().unwrap_or(0));
    row_with(w, b, |r| &mut r.fields[1])
}

fn blind_index_target(w: &World, b: &[u8]) -> Result<(), String> {
    row_with(w, b, |r| &mut r.indexes[0])
}

fn deterministic_target(w: &World, b: &[u8]) -> Result<(), String> {
    let _ = search::deterministic_version(b);
    // Decrypted by the row's unseal, under the tenant's deterministic root.
    row_with(w, b, |r| &mut r.fields[3])
}

/// The first byte picks what the rest replaces in a genuine registry row: `wrapped` (which
/// must then never unwrap unless unchanged), or one of its text columns.
fn registry_target(w: &World, b: &[u8]) -> Result<(), String> {
    let Some((&pick, rest)) = b.split_first() else {
        return Ok(());
    };
    let entry = &w.entries[usize::from(pick) % w.entries.len()];
    let mut record = RegistryRecord::try_from(entry).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(rest).into_owned();
    match pick % 5 {
        0 => record.wrapped = rest.to_vec(),
        1 => record.purpose = text,
        2 => record.state = text,
        3 => record.cmk_ref = text,
        _ => record.policy = text,
    }
    let Ok(parsed) = RegistryEntry::try_from(record) else {
        return Ok(());
    };
    let context = entry_context(
        parsed.purpose,
        &parsed.tenant,
        &parsed.policy,
        parsed.kek_id,
        parsed.version,
        &parsed.cmk_ref,
    );
    let unwrapped = w.rt.block_on(
        w.fx.local
            .unwrap(&parsed.cmk_ref, &parsed.wrapped, &context),
    );
    let unchanged = parsed.wrapped == entry.wrapped
        && parsed.purpose == entry.purpose
        && parsed.policy == entry.policy
        && parsed.cmk_ref == entry.cmk_ref;
    match (unwrapped.is_ok(), unchanged) {
        (true, false) => Err("a changed registry entry unwrapped".into()),
        (false, true) => Err("the genuine registry entry does not unwrap".into()),
        _ => Ok(()),
    }
}

/// The first byte picks what the rest replaces in the genuine configuration record: its
/// content, MAC, tenant or revision. Also the content's JSON alone, past any MAC.
fn config_target(w: &World, b: &[u8]) -> Result<(), String> {
    let Some((&pick, rest)) = b.split_first() else {
        return Ok(());
    };
    let _ = serde_json::from_slice::<TenantConfig>(rest).map(|c| c.validate());
    let mut record = ConfigRecord {
        tenant_id: w.config.tenant.clone(),
        revision: i64::try_from(w.config.revision).unwrap_or(0),
        content: w.config.content.clone(),
        mac: w.config.mac.to_vec(),
        created_at: 0,
    };
    match pick % 4 {
        0 => record.content = rest.to_vec(),
        1 => record.mac = rest.to_vec(),
        2 => record.tenant_id = String::from_utf8_lossy(rest).into_owned(),
        _ => {
            let mut n = [0u8; 8];
            for (d, s) in n.iter_mut().zip(rest) {
                *d = *s;
            }
            record.revision = i64::from_be_bytes(n);
        }
    }
    let tenant = TenantId::new("acme").unwrap();
    let Ok(signed) = record.into_signed(&tenant) else {
        return Ok(());
    };
    let unchanged = signed == w.config;
    let verifier = ConfigVerifier::new(OperatorKey::new(cmk_core::secret::SecretKey::from_bytes(
        [42; 32],
    )));
    match (verifier.verify_loaded(&tenant, &signed).is_ok(), unchanged) {
        (true, false) => Err("a changed configuration record verified".into()),
        (false, true) => Err("the genuine configuration record does not verify".into()),
        _ => Ok(()),
    }
}

/// An event line, parsed alone; every 64th input also as the last segment of a spool that a
/// process opens and reads.
fn spool_target(w: &World, b: &[u8]) -> Result<(), String> {
    let _ = parse_json_line(b);
    if b.len().is_multiple_of(64) {
        let dir = w.spool_dir.path().join("spool");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut segment = w.event_line.clone();
        segment.extend_from_slice(b);
        std::fs::write(dir.join("seg-1.jsonl"), &segment).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("cursor"), &b[..b.len().min(24)]).map_err(|e| e.to_string())?;
        if let Ok(spool) = cmk_core::audit::spool::Spool::open(&dir, 1 << 20) {
            let _ = spool.peek(16);
        }
    }
    Ok(())
}

/// A parser with a planted bug (a slice past the end of a short input, as a real parser
/// might have): the fuzzer must find it, or its silence about the real targets means nothing.
fn planted_bug(_: &World, b: &[u8]) -> Result<(), String> {
    if b.first() == Some(&key_column::BOUND_V1) && b.len() < 20 {
        let _ = &b[9..20];
    }
    Ok(())
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "key_column",
            seeds: |w| {
                let mut s: Vec<Vec<u8>> = w.row.key_columns.iter().flatten().cloned().collect();
                let list = key_column::encode_list([("email", false), ("name", true)]).unwrap();
                s.push(key_column::build_classic(7, &[5; 40], Some(&[4; 16]), &list).unwrap());
                s.push(key_column::build(
                    7, 1, &[1; 12], &[2; 32], &[3; 16], None, &list,
                ));
                s
            },
            check: key_column_target,
            smoke: 20_000,
        },
        Target {
            name: "field",
            seeds: |w| w.row.fields[..3].iter().flatten().cloned().collect(),
            check: field_target,
            smoke: 5_000,
        },
        Target {
            name: "blind_index",
            seeds: |w| w.row.indexes.iter().flatten().cloned().collect(),
            check: blind_index_target,
            smoke: 5_000,
        },
        Target {
            name: "deterministic",
            seeds: |w| w.row.fields[3..].iter().flatten().cloned().collect(),
            check: deterministic_target,
            smoke: 5_000,
        },
        Target {
            name: "registry_entry",
            seeds: |w| {
                (0..5u8)
                    .map(|pick| {
                        let e = &w.entries[usize::from(pick) % w.entries.len()];
                        let rest = match pick {
                            0 => e.wrapped.clone(),
                            1 => e.purpose.as_str().as_bytes().to_vec(),
                            2 => e.state.as_str().as_bytes().to_vec(),
                            3 => e.cmk_ref.as_str().as_bytes().to_vec(),
                            _ => e.policy.as_bytes().to_vec(),
                        };
                        [vec![pick], rest].concat()
                    })
                    .collect()
            },
            check: registry_target,
            smoke: 3_000,
        },
        Target {
            name: "config_record",
            seeds: |w| {
                vec![
                    [vec![0], w.config.content.clone()].concat(),
                    [vec![1], w.config.mac.to_vec()].concat(),
                    [vec![2], w.config.tenant.as_bytes().to_vec()].concat(),
                    [vec![3], w.config.revision.to_be_bytes().to_vec()].concat(),
                ]
            },
            check: config_target,
            smoke: 3_000,
        },
        Target {
            name: "spool_record",
            seeds: |w| vec![w.event_line.clone()],
            check: spool_target,
            smoke: 5_000,
        },
    ]
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one target for `budget` (inputs, or time); the first failure is returned.
fn run(
    w: &World,
    t: &Target,
    seed: u64,
    inputs: usize,
    time: Option<Duration>,
) -> Result<usize, String> {
    let mut rng = Rng(seed
        ^ t.name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)));
    let seeds = (t.seeds)(w);
    // The genuine values pass every check: the positive control of each target.
    for s in &seeds {
        (t.check)(w, s).map_err(|e| format!("{}: the genuine seed fails: {e}", t.name))?;
    }
    let start = Instant::now();
    let mut n = 0usize;
    while time.map_or(n < inputs, |d| start.elapsed() < d) {
        let input = mutate(&mut rng, &seeds);
        let outcome = catch_unwind(AssertUnwindSafe(|| (t.check)(w, &input)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("panicked".to_string()),
        };
        if let Some(why) = failure {
            if t.name == "planted" {
                return Err(why);
            }
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{}-{seed}-{n}.bin", t.name));
            let _ = std::fs::write(&file, &input);
            return Err(format!(
                "{}: {why} (CMK_FUZZ_SEED={seed}, input {n}, saved to {}):\n{}",
                t.name,
                file.display(),
                cmk_core::hexfmt::encode(&input)
            ));
        }
        n += 1;
        if n.is_multiple_of(1024) {
            w.fx.sink.take(); // the reads' events, kept in memory by the fixture's sink
        }
    }
    Ok(n)
}

fn main() {
    let seed = env_u64("CMK_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let time = env_u64("CMK_FUZZ_SECONDS").map(Duration::from_secs);
    let only = std::env::var("CMK_FUZZ_TARGET").ok();
    // A failing check's panic message would be noise beside the report that follows it.
    std::panic::set_hook(Box::new(|_| {}));
    let w = World::new();
    let planted = Target {
        name: "planted",
        seeds: |w| w.row.key_columns.iter().flatten().cloned().collect(),
        check: planted_bug,
        smoke: 100_000,
    };
    match run(&w, &planted, seed, planted.smoke, None) {
        Err(why) => println!("fuzz planted bug found ({why}): the fuzzer can find a panic"),
        Ok(n) => {
            println!("fuzz planted bug NOT found in {n} inputs: the fuzzer is broken");
            std::process::exit(1);
        }
    }
    let mut failed = false;
    let mut ran = 0;
    for t in targets() {
        if only.as_deref().is_some_and(|o| o != t.name) {
            continue;
        }
        ran += 1;
        match run(&w, &t, seed, t.smoke, time) {
            Ok(n) => println!(
                "fuzz {:<15} {n:>9} inputs, no failure (seed {seed})",
                t.name
            ),
            Err(report) => {
                println!("fuzz {report}");
                failed = true;
            }
        }
    }
    if ran == 0 {
        println!("fuzz: no target named {only:?}");
        std::process::exit(2);
    }
    if failed {
        std::process::exit(1);
    }
}
