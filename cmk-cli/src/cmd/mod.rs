//! One module per command group.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod config;
pub(crate) mod keyring;
pub(crate) mod kms;
pub(crate) mod migrate;
pub(crate) mod rekey;
pub(crate) mod tenant;
pub(crate) mod verify;
