//! Key buffers and plaintext are wiped when cmk frees them (issue 15 §4), checked through
//! the types' own drop behaviour: this test binary's global allocator looks into every block
//! freed (or moved by a reallocation) while a check is on, for a needle.
//!
//! The positive control: a plain `Vec` holding the needle is found when it is dropped.

#![allow(unsafe_code)] // the inspecting allocator, below

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use cmk_core::crypto::normalize::Normalizer;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::secret::{SecretBytes, SecretKey};
use common::{ALL, Fixture, Stored, class, doctor};

/// The bytes looked for: lower case, so that normalising for a blind index keeps them.
const NEEDLE: &[u8] = b"zeroize-canary-needle-4711";
/// A key's bytes looked for.
const KEY: [u8; 32] = [0x5a; 32];

/// Further key bytes looked for, set by a test (all zero: none).
static MORE_KEY: [AtomicU8; 32] = [const { AtomicU8::new(0) }; 32];

static WATCHING: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicBool = AtomicBool::new(false);
/// One check at a time: the flags are global.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The system allocator, looking into each block it frees or moves while `WATCHING`.
struct Inspecting;

fn inspect(ptr: *const u8, size: usize) {
    if !WATCHING.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: `ptr` is a live block of `size` bytes that the caller is about to free or
    // move: it is still allocated and readable. Reading it allocates nothing.
    let block = unsafe { std::slice::from_raw_parts(ptr, size) };
    let more: [u8; 32] = std::array::from_fn(|i| MORE_KEY[i].load(Ordering::Relaxed));
    let is_key = |w: &[u8]| w == KEY || (more != [0; 32] && w == more);
    if block.windows(NEEDLE.len()).any(|w| w == NEEDLE) || block.windows(32).any(is_key) {
        FOUND.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; `inspect` only reads the block before
// it is given back. Uninitialised bytes of a block are read as `u8` by `inspect`, which is
// why this lives in a test binary of its own and is never used by cmk itself.
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc`, with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        inspect(ptr, layout.size());
        // SAFETY: as `System::dealloc`, with the caller's block and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation may move the bytes and free the old block unwiped.
        inspect(ptr, layout.size());
        // SAFETY: as `System::realloc`, with the caller's block, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

/// Runs `f` with the inspection on; whether a freed block held the needle or the key.
fn freed_a_secret(f: impl FnOnce()) -> bool {
    FOUND.store(false, Ordering::SeqCst);
    WATCHING.store(true, Ordering::SeqCst);
    f();
    WATCHING.store(false, Ordering::SeqCst);
    FOUND.load(Ordering::SeqCst)
}

#[test]
fn the_inspection_finds_an_unwiped_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let plain = NEEDLE.to_vec();
    assert!(freed_a_secret(|| drop(plain)), "a plain Vec is not wiped");
    let key = Box::new(KEY);
    assert!(
        freed_a_secret(|| drop(key)),
        "a plain boxed array is not wiped"
    );
}

#[test]
fn secret_containers_are_wiped_when_dropped() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let mut grown = Vec::with_capacity(8);
    grown.extend_from_slice(NEEDLE);
    let bytes = SecretBytes::new(grown);
    assert!(!freed_a_secret(|| drop(bytes)));
    let key = Box::new(SecretKey::from_bytes(KEY));
    assert!(!freed_a_secret(|| drop(key)));
    let clone = Box::new(SecretKey::from_bytes(KEY).clone());
    assert!(!freed_a_secret(|| drop(clone)));
}

/// A runtime and tenant `acme` onboarded, made before any check is on.
fn onboarded() -> (tokio::runtime::Runtime, Fixture) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(Fixture::new(&["acme"]));
    (rt, fx)
}

/// Sealing and unsealing a row of the needle, in an envelope field, a blind-indexed one and a
/// deterministic one: no buffer cmk frees holds it, and neither do the results once dropped.
#[test]
fn sealing_and_unsealing_free_no_plaintext() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let (rt, fx) = onboarded();
    let keys = rt.block_on(fx.cmk.keys_for(&doctor("acme"), &ALL)).unwrap();
    let schema = RowSchema::new(
        "notes",
        vec![
            FieldSpec::new("body", class("private")),
            FieldSpec::new("email", class("private")).blind_index(Normalizer::Casefold),
            FieldSpec::new("code", class("secret")).deterministic(),
            FieldSpec::new("padded", class("restricted")).pad_to(64),
        ],
    )
    .unwrap();
    // Warm: plans and thread buffers made outside the check.
    let values: [Option<&[u8]>; 4] = [Some(NEEDLE); 4];
    drop(keys.seal(&schema, None, &values).unwrap());
    let mut sealed = None;
    assert!(
        !freed_a_secret(|| sealed = Some(keys.seal(&schema, None, &values).unwrap())),
        "sealing freed a buffer holding the plaintext"
    );
    let row = Stored::from_sealed("acme", &sealed.unwrap());
    let mut opened = None;
    assert!(
        !freed_a_secret(|| opened = Some(row.with(None, |r| keys.unseal(&schema, r)).unwrap())),
        "unsealing freed a buffer holding the plaintext"
    );
    let opened = opened.unwrap();
    assert!(opened.values.iter().all(|v| v.value() == Some(NEEDLE)));
    assert!(
        !freed_a_secret(|| drop(opened)),
        "the unsealed row was not wiped"
    );
    fx.sink.take();
}

/// The KEKs a key handle leased are wiped when the handle, the service and their leases are
/// dropped (the KEK's bytes are read back from the registry through the KMS first).
#[test]
fn leased_keks_are_wiped_when_dropped() {
    use cmk_core::kms::Kms;
    use cmk_core::registry::{KeyRegistry, Purpose, entry_context};
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let (rt, fx) = onboarded();
    let tenant = cmk_core::TenantId::new("acme").unwrap();
    let entry = rt
        .block_on(fx.registry.entries(&tenant))
        .unwrap()
        .into_iter()
        .find(|e| e.purpose == Purpose::Kek && e.policy == "private")
        .unwrap();
    let context = entry_context(
        entry.purpose,
        &tenant,
        &entry.policy,
        entry.kek_id,
        entry.version,
        &entry.cmk_ref,
    );
    let kek = rt
        .block_on(fx.local.unwrap(&entry.cmk_ref, &entry.wrapped, &context))
        .unwrap();
    for (slot, b) in MORE_KEY.iter().zip(kek.expose_secret()) {
        slot.store(*b, Ordering::SeqCst);
    }
    drop(kek);
    let keys = rt
        .block_on(fx.cmk.keys_for(&doctor("acme"), &["private"]))
        .unwrap();
    let schema = RowSchema::new("notes", vec![FieldSpec::new("body", class("private"))]).unwrap();
    drop(keys.seal(&schema, None, &[Some(b"x")]).unwrap());
    let all = move || {
        drop(keys);
        drop(fx);
    };
    let found = freed_a_secret(all);
    for slot in &MORE_KEY {
        slot.store(0, Ordering::SeqCst);
    }
    assert!(!found, "a freed block held the KEK's bytes");
}
