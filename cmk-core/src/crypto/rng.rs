//! Randomness for data keys and nonces: the operating system's CSPRNG, read in bulk.
//!
//! One `getrandom` call per DEK and nonce costs about 0.4 µs, as much as the AES work of a
//! small row; reading 4 KiB at a time makes it a copy. Each thread keeps its own buffer.
//! A buffer must never be shared by two processes: after `fork` both would hand out the same
//! bytes, so the same DEK or nonce. Every draw compares the process id recorded at refill
//! with the current one and throws the buffer away on a change.

use std::cell::RefCell;

use zeroize::Zeroize;

const POOL_SIZE: usize = 4096;

struct Pool {
    bytes: Box<[u8; POOL_SIZE]>,
    /// Bytes from `pos` on are unused.
    pos: usize,
    pid: u32,
}

impl Pool {
    fn empty() -> Self {
        Pool {
            bytes: Box::new([0u8; POOL_SIZE]),
            pos: POOL_SIZE,
            pid: 0,
        }
    }

    fn refill(&mut self) -> crate::Result<()> {
        getrandom::getrandom(&mut self.bytes[..]).map_err(|_| crate::Error::Random)?;
        self.pos = 0;
        self.pid = std::process::id();
        Ok(())
    }

    fn fill(&mut self, out: &mut [u8]) -> crate::Result<()> {
        if out.len() > POOL_SIZE / 4 {
            // Large requests bypass the pool.
            return getrandom::getrandom(out).map_err(|_| crate::Error::Random);
        }
        if self.pid != std::process::id() {
            // A forked child: the parent may hand out the same bytes.
            self.bytes.zeroize();
            self.pos = POOL_SIZE;
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

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::empty());
}

/// Fills `out` with bytes from the operating system's CSPRNG (buffered per thread).
pub fn fill(out: &mut [u8]) -> crate::Result<()> {
    POOL.with(|p| match p.try_borrow_mut() {
        Ok(mut pool) => pool.fill(out),
        // Re-entrant use (cannot happen today) falls back to a direct read.
        Err(_) => getrandom::getrandom(out).map_err(|_| crate::Error::Random),
    })
}

/// A random array.
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
