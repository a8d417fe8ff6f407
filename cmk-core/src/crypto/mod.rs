//! Cryptographic building blocks: only compositions of standard primitives from RustCrypto.

pub mod aead;
pub mod mac;
pub mod normalize;
pub mod rng;
pub mod search;
pub mod secret;
