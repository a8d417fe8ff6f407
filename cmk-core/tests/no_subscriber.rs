//! Security events sent to `tracing` with no subscriber installed reach nobody: building a
//! `Cmk` with the default sink says so once, on standard error. Each case runs in a child
//! process of its own (a global subscriber cannot be removed once set).

use std::process::Command;
use std::sync::Arc;

use cmk_core::kms::local::LocalKms;
use cmk_core::registry::MemoryRegistry;
use cmk_core::secret::SecretKey;
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};

const WARNING: &str = "no tracing subscriber is installed";

fn build_twice() {
    for _ in 0..2 {
        cmk_core::Cmk::builder()
            .kms(Arc::new(LocalKms::in_memory()))
            .registry(Arc::new(MemoryRegistry::new()))
            .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
                SecretKey::from_bytes([1; 32]),
            ))))
            .build()
            .unwrap();
    }
}

fn child_stderr(case: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_builds", "--nocapture"])
        .env("CMK_CHILD_CASE", case)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_a_subscriber_the_default_sink_says_so_once() {
    let stderr = child_stderr("bare");
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
}

#[test]
fn with_a_subscriber_nothing_is_said() {
    let stderr = child_stderr("subscribed");
    assert!(!stderr.contains(WARNING), "{stderr}");
}

#[test]
#[ignore = "the child process of the subscriber tests; run by them"]
fn child_builds() {
    if std::env::var("CMK_CHILD_CASE").unwrap() == "subscribed" {
        tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())
            .unwrap();
    }
    build_twice();
}
