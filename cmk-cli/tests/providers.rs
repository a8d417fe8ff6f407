//! The `cmk` command with tenants' master keys in real KMSes (moto for AWS KMS, SoftHSM2 for
//! PKCS#11, PyKMIP for KMIP), configured in `HOME/kms.toml`: keys created, tenants onboarded
//! and rotated onto them, the table read through them, and the errors a person acts on.
//! Each provider's test runs when its feature is on, and then requires its server's variables
//! (scripts/test-all sets them): never skipped silently.

#![cfg(any(feature = "aws", feature = "pkcs11", feature = "kmip"))]

mod common;

use common::*;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} must be set when this provider's feature is on (scripts/test-all sets it)")
    })
}

/// `cmk --home HOME --json args...` with the AWS SDK's test credentials, exiting with `code`.
fn run(d: &Deployment, args: &[&str], code: i32) -> serde_json::Value {
    let out = assert_cmd::Command::cargo_bin("cmk")
        .unwrap()
        .arg("--home")
        .arg(d.home())
        .arg("--json")
        .args(args)
        .env_remove("CMK_HOME")
        .env_remove("CMK_DATABASE_URL")
        .env_remove("CMK_CONFIG_FILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert_code(&out, code);
    if code != 0 {
        return serde_json::json!({ "stderr": stderr(&out) });
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
}

/// `cmk kms create-key`: the new key's reference.
fn create_key(d: &Deployment, provider: &str, label: &str) -> String {
    let created = run(
        d,
        &[
            "kms",
            "create-key",
            "--provider",
            provider,
            "--label",
            label,
        ],
        0,
    );
    created["key"].as_str().unwrap().to_string()
}

/// The whole round on one provider named `provider`, configured by `kms_toml`.
async fn exercise(provider: &str, kms_toml: &str, secret: Option<&str>) {
    let d = Deployment::new(4).await;
    std::fs::write(d.home().join("kms.toml"), kms_toml).unwrap();

    let listed = run(&d, &["kms", "list"], 0);
    let providers = listed["providers"].as_array().unwrap();
    assert!(
        providers.iter().any(|p| p["provider"] == provider),
        "{listed}"
    );
    if let Some(secret) = secret {
        // The scan finds a planted secret, then finds none in what the command printed.
        let planted = format!("{listed} {secret}");
        assert!(planted.contains(secret));
        assert!(!listed.to_string().contains(secret), "{listed}");
    }

    let first = create_key(&d, provider, "cli-initech");
    assert!(first.starts_with(&format!("{provider}:")), "{first}");
    let onboarded = run(
        &d,
        &["tenant", "onboard", "--tenant", "initech", "--key", &first],
        0,
    );
    assert_eq!(onboarded["proven_keys"], serde_json::json!([first]));
    assert!(
        onboarded["entries_written"].as_u64().unwrap() >= 4,
        "{onboarded}"
    );
    let shown = run(&d, &["tenant", "show", "--tenant", "initech"], 0);
    assert!(
        shown["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["master_key"] == first.as_str())
    );

    // The quickstart's tenant moves onto the provider; its rows read through it.
    let second = create_key(&d, provider, "cli-acme");
    let rotated = run(
        &d,
        &["rotate-master", "--tenant", "acme", "--key", &second],
        0,
    );
    assert!(rotated.to_string().contains(&second), "{rotated}");
    let shown = run(&d, &["tenant", "show", "--tenant", "acme"], 0);
    let under_second = shown["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["master_key"] == second.as_str())
        .count();
    assert!(under_second >= 5, "{shown}");
    // With the local key disabled, only the provider can unwrap acme's keys: every row reads.
    run(&d, &["keyring", "disable", "acme"], 0);
    let verified = run(&d, &["verify", "--table", "patients"], 0);
    assert_eq!(verified["ok"], 9, "{verified}");

    // A key the provider does not have: the KMS's refusal, exit 5, nothing configured.
    let missing = format!("{provider}:{}", "0badc0de-0000-4000-8000-000000000000");
    let refused = run(
        &d,
        &["tenant", "onboard", "--tenant", "ghost", "--key", &missing],
        5,
    );
    assert!(
        refused["stderr"].as_str().unwrap().contains("KMS"),
        "{refused}"
    );
    run(&d, &["tenant", "show", "--tenant", "ghost"], 3);
}

#[tokio::test]
async fn a_malformed_providers_file_names_its_line_and_field() {
    let d = Deployment::new(1).await;
    std::fs::write(d.home().join("kms.toml"), "[aws]\nregon = \"eu-west-1\"\n").unwrap();
    let out = run(&d, &["tenant", "list"], 6);
    let message = out["stderr"].as_str().unwrap();
    assert!(
        message.contains("kms.toml: line 2: [aws] regon: unknown field"),
        "{message}"
    );
    std::fs::write(d.home().join("kms.toml"), "[vault]\naddress = \"x\"\n").unwrap();
    let out = run(&d, &["tenant", "list"], 6);
    assert!(
        out["stderr"].as_str().unwrap().contains("unknown provider"),
        "{out}"
    );
}

#[cfg(feature = "aws")]
#[tokio::test]
async fn aws_kms_keys_through_the_command() {
    let endpoint = var("CMK_TEST_AWS_KMS_ENDPOINT");
    exercise(
        "aws",
        &format!("[aws]\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n"),
        None,
    )
    .await;
}

#[cfg(feature = "pkcs11")]
#[tokio::test]
async fn pkcs11_keys_through_the_command() {
    let (module, token, pin) = (
        var("CMK_TEST_PKCS11_MODULE"),
        var("CMK_TEST_PKCS11_TOKEN"),
        var("CMK_TEST_PKCS11_PIN"),
    );
    exercise(
        "pkcs11",
        &format!("[pkcs11]\nmodule = \"{module}\"\ntoken = \"{token}\"\npin_env = \"CMK_TEST_PKCS11_PIN\"\n"),
        Some(&pin),
    )
    .await;
}

#[cfg(feature = "kmip")]
#[tokio::test]
async fn kmip_keys_through_the_command() {
    let (addr, pki) = (var("CMK_TEST_KMIP_ADDR"), var("CMK_TEST_KMIP_PKI"));
    exercise(
        "kmip",
        &format!(
            "[kmip]\naddress = \"{addr}\"\nserver_name = \"127.0.0.1\"\nca = \"{pki}/ca.crt\"\nclient_cert = \"{pki}/client.crt\"\nclient_key = \"{pki}/client.key\"\n"
        ),
        None,
    )
    .await;
}
