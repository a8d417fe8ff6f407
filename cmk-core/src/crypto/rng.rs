//! Randomness for data keys and nonces: the operating system's CSPRNG, read in bulk.
//!
//! One `getrandom` call per DEK and nonce costs about 0.4 µs, as much as the AES work of a
//! small row; reading 4 KiB at a time makes it a copy. Each thread keeps its own buffer.
//! A buffer must never be shared by two processes: after `fork` both would hand out the same
//! bytes, so the same DEK or nonce. On Linux a `pthread_atfork` child handler bumps a fork
//! generation counter, and every draw compares it with the generation recorded at refill (one
//! atomic load). Elsewhere every draw compares the process id instead (a `getpid` system
//! call, about 0.25 µs on a virtual machine, which is why Linux avoids it). Either way the
//! buffer is wiped and refilled in a forked child. A child created by a raw `fork` system
//! call that bypasses libc (no atfork handlers) is not detected on Linux until the next
//! refill; no mainstream runtime forks that way.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroize;

const POOL_SIZE: usize = 4096;

/// Counts forks seen by the child handler.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

#[cfg(any(target_os = "linux", target_os = "android"))]
mod fork_watch {
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, Ordering};

    static REGISTER: Once = Once::new();
    static REGISTERED: AtomicBool = AtomicBool::new(false);

    /// Runs in the child after `fork`; an atomic increment is async-signal-safe.
    extern "C" fn on_fork_child() {
        super::FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    }

    /// True once the handler is registered.
    pub(super) fn active() -> bool {
        REGISTER.call_once(|| {
            // SAFETY: `pthread_atfork` only records the function pointer; the handler touches
            // nothing but a static atomic, so it is sound to run in a forked child. This is
            // the one unsafe block of cmk-core: the safe alternative, a `getpid` call per
            // draw, costs more than the AES work of a row. tests/fork.rs checks the effect.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
            REGISTERED.store(rc == 0, Ordering::SeqCst);
        });
        REGISTERED.load(Ordering::Acquire)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod fork_watch {
    pub fn active() -> bool {
        false
    }
}

/// Identifies the process the buffer was filled in: the fork generation where the atfork
/// handler runs, else the process id.
pub(crate) fn process_mark() -> u64 {
    if fork_watch::active() {
        FORK_GENERATION.load(Ordering::Acquire) << 32 | 1
    } else {
        u64::from(std::process::id()) << 1
    }
}

struct Pool {
    bytes: Box<[u8; POOL_SIZE]>,
    /// Bytes from `pos` on are unused.
    pos: usize,
    mark: u64,
}

impl Pool {
    fn empty() -> Self {
        Pool {
            bytes: Box::new([0u8; POOL_SIZE]),
            pos: POOL_SIZE,
            mark: 0,
        }
    }

    fn refill(&mut self) -> crate::Result<()> {
        getrandom::getrandom(&mut self.bytes[..]).map_err(|_| crate::Error::Random)?;
        self.pos = 0;
        self.mark = process_mark();
        Ok(())
    }

    fn fill(&mut self, out: &mut [u8]) -> crate::Result<()> {
        if out.len() > POOL_SIZE / 4 {
            // Large requests bypass the pool.
            return getrandom::getrandom(out).map_err(|_| crate::Error::Random);
        }
        if self.mark != process_mark() {
            // A forked child: the parent may hand out the same bytes.
            self.discard();
        }
        if POOL_SIZE - self.pos < out.len() {
            self.refill()?;
        }
        let end = self.pos + out.len();
        out.copy_from_slice(&self.bytes[self.pos..end]);
        // Used bytes are wiped so a memory dump cannot recover past keys.
        self.bytes[self.pos..end].zeroize();
        self.pos = end;
        Ok(())
    }
}

impl Pool {
    fn discard(&mut self) {
        self.bytes.zeroize();
        self.pos = POOL_SIZE;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::empty());
}

/// Fills `out` with bytes from the operating system's CSPRNG (buffered per thread).
///
/// # Errors
/// [`crate::Error::Random`] when the operating system's random number generator fails.
pub fn fill(out: &mut [u8]) -> crate::Result<()> {
    POOL.with(|p| match p.try_borrow_mut() {
        Ok(mut pool) => pool.fill(out),
        // Re-entrant use (cannot happen today) falls back to a direct read.
        Err(_) => getrandom::getrandom(out).map_err(|_| crate::Error::Random),
    })
}

/// A random array.
///
/// # Errors
/// [`crate::Error::Random`] when the operating system's random number generator fails.
pub fn array<const N: usize>() -> crate::Result<[u8; N]> {
    let mut a = [0u8; N];
    fill(&mut a)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_span_refills() {
        let mut seen = std::collections::HashSet::new();
        // 300 draws of 32 bytes cross at least two refills of the 4 KiB pool.
        for _ in 0..300 {
            assert!(seen.insert(array::<32>().unwrap()));
        }
    }

    #[test]
    fn large_requests_bypass_the_pool() {
        let mut big = vec![0u8; 8192];
        fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }
}
