//! The deployment's KMS providers besides the local keyring: `HOME/kms.toml` (or
//! `--kms-config FILE`), one table per provider, each routing the key references that start
//! with its name.
//!
//! ```toml
//! [aws]                      # aws:<key id or ARN or alias/...>
//! region = "eu-west-1"       # optional: the SDK's chain otherwise
//! endpoint = "https://kms-fips.eu-west-1.amazonaws.com"  # optional
//!
//! [pkcs11]                   # pkcs11:<token>/<label>
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "cmk"
//! pin_env = "CMK_PKCS11_PIN" # the PIN comes from this environment variable
//!
//! [kmip]                     # kmip:<unique identifier>
//! address = "kmip.example.com:5696"
//! server_name = "kmip.example.com"
//! ca = "/etc/cmk/kmip/ca.pem"
//! client_cert = "/etc/cmk/kmip/client.pem"
//! client_key = "/etc/cmk/kmip/client.key"
//! ```
//!
//! The file holds no secret: AWS credentials come from the SDK's chain (environment, profile,
//! instance role), the PKCS#11 PIN from the environment variable the file names, the KMIP
//! client key from its PEM file. Errors name the file, line and field, never a value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cmk_core::kms::Kms;
use toml_edit::Document;

use crate::exit::{CliError, CliResult, Exit};

/// A provider as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderSpec {
    Aws {
        region: Option<String>,
        endpoint: Option<String>,
    },
    Pkcs11 {
        module: PathBuf,
        token: String,
        pin_env: String,
    },
    Kmip {
        address: String,
        server_name: String,
        ca: PathBuf,
        client_cert: PathBuf,
        client_key: PathBuf,
    },
}

impl ProviderSpec {
    /// The provider's name in key references.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ProviderSpec::Aws { .. } => "aws",
            ProviderSpec::Pkcs11 { .. } => "pkcs11",
            ProviderSpec::Kmip { .. } => "kmip",
        }
    }

    /// What `kms list` shows: where the provider is, never a credential.
    pub(crate) fn describe(&self) -> serde_json::Value {
        match self {
            ProviderSpec::Aws { region, endpoint } => serde_json::json!({
                "provider": "aws", "region": region, "endpoint": endpoint }),
            ProviderSpec::Pkcs11 {
                module,
                token,
                pin_env,
            } => serde_json::json!({
                "provider": "pkcs11", "module": module.display().to_string(), "token": token,
                "pin_env": pin_env }),
            ProviderSpec::Kmip {
                address,
                server_name,
                ..
            } => serde_json::json!({
                "provider": "kmip", "address": address, "server_name": server_name }),
        }
    }
}

/// The providers file's path: `--kms-config`, else `HOME/kms.toml` if it exists.
pub(crate) fn file_of(home: &Path, explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => Some(home.join("kms.toml")).filter(|p| p.exists()),
    }
}

/// Reads the providers file; a relative path in it is relative to the file's directory.
pub(crate) fn load(path: &Path) -> CliResult<Vec<ProviderSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
    let doc = Document::parse(text.as_str()).map_err(|e| {
        CliError::file(
            path,
            format!(
                "line {}: not valid TOML: {}",
                line(&text, e.span()),
                e.message().trim()
            ),
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs = Vec::new();
    for (name, item) in doc.iter() {
        let at = |field: &str, why: &str| {
            let span = item
                .as_table_like()
                .and_then(|t| t.key(field))
                .and_then(|k| k.span())
                .or_else(|| item.span());
            CliError::file(
                path,
                format!("line {}: [{name}] {field}: {why}", line(&text, span)),
            )
        };
        let table = item
            .as_table_like()
            .ok_or_else(|| at("(table)", "must be a table"))?;
        let allowed: &[&str] = match name {
            "aws" => &["region", "endpoint"],
            "pkcs11" => &["module", "token", "pin_env"],
            "kmip" => &["address", "server_name", "ca", "client_cert", "client_key"],
            _ => {
                return Err(at(
                    "(table)",
                    "unknown provider; expected aws, pkcs11 or kmip",
                ));
            }
        };
        for (field, _) in table.iter() {
            if !allowed.contains(&field) {
                return Err(at(
                    field,
                    &format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        let text_of = |field: &str| -> CliResult<Option<String>> {
            match table.get(field) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| at(field, "must be a string")),
            }
        };
        let required = |field: &str| -> CliResult<String> {
            text_of(field)?.ok_or_else(|| at(field, "required"))
        };
        let file = |field: &str| -> CliResult<PathBuf> { Ok(base.join(required(field)?)) };
        specs.push(match name {
            "aws" => ProviderSpec::Aws {
                region: text_of("region")?,
                endpoint: text_of("endpoint")?,
            },
            "pkcs11" => ProviderSpec::Pkcs11 {
                module: file("module")?,
                token: required("token")?,
                pin_env: required("pin_env")?,
            },
            _ => ProviderSpec::Kmip {
                address: required("address")?,
                server_name: required("server_name")?,
                ca: file("ca")?,
                client_cert: file("client_cert")?,
                client_key: file("client_key")?,
            },
        });
    }
    Ok(specs)
}

fn line(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map_or(0, |s| {
        text.as_bytes()[..s.start.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    })
}

/// A provider this build was made without.
fn not_built(name: &str) -> CliError {
    CliError::new(
        Exit::Usage,
        format!(
            "this cmk was built without the `{name}` provider: \
             cargo install --path cmk-cli --features {name}"
        ),
    )
}

/// A connected provider, and what it can do besides wrapping.
#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) kms: Arc<dyn Kms>,
    maker: KeyMaker,
}

#[derive(Clone)]
enum KeyMaker {
    #[cfg(feature = "aws")]
    Aws(Arc<cmk_core::kms::aws::AwsKms>),
    #[cfg(feature = "pkcs11")]
    Pkcs11(Arc<cmk_core::kms::pkcs11::Pkcs11Kms>, String),
    #[cfg(feature = "kmip")]
    Kmip(Arc<cmk_core::kms::kmip::KmipKms>),
}

impl Provider {
    /// Connects `spec` (nothing is sent until a key is used).
    #[allow(clippy::unused_async)] // async only with the `aws` feature
    pub(crate) async fn connect(spec: &ProviderSpec) -> CliResult<Provider> {
        match spec {
            #[cfg(feature = "aws")]
            ProviderSpec::Aws { region, endpoint } => {
                use cmk_core::kms::aws::{AwsKms, AwsKmsSettings};
                let mut settings = AwsKmsSettings::default();
                if let Some(region) = region {
                    settings = settings.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    settings = settings.with_endpoint(endpoint);
                }
                let kms = Arc::new(AwsKms::from_env(settings).await);
                Ok(Provider {
                    kms: kms.clone(),
                    maker: KeyMaker::Aws(kms),
                })
            }
            #[cfg(feature = "pkcs11")]
            ProviderSpec::Pkcs11 {
                module,
                token,
                pin_env,
            } => {
                use cmk_core::kms::pkcs11::Pkcs11Kms;
                let pin = zeroize::Zeroizing::new(std::env::var(pin_env).map_err(|_| {
                    CliError::new(
                        Exit::Usage,
                        format!(
                            "the PKCS#11 PIN: environment variable {pin_env} is not set (kms.toml [pkcs11] pin_env)"
                        ),
                    )
                })?);
                let kms = Pkcs11Kms::new(module)
                    .map_err(|e| CliError::new(Exit::Kms, format!("PKCS#11 module: {e}")))?
                    .with_token(token.as_str(), pin.as_str());
                let kms = Arc::new(kms);
                Ok(Provider {
                    kms: kms.clone(),
                    maker: KeyMaker::Pkcs11(kms, token.clone()),
                })
            }
            #[cfg(feature = "kmip")]
            ProviderSpec::Kmip {
                address,
                server_name,
                ca,
                client_cert,
                client_key,
            } => {
                use cmk_core::kms::kmip::{KmipKms, KmipSettings};
                let settings = KmipSettings::new(
                    address.as_str(),
                    server_name.as_str(),
                    ca,
                    client_cert,
                    client_key,
                );
                let kms = Arc::new(
                    KmipKms::new(settings)
                        .map_err(|e| CliError::new(Exit::Kms, format!("KMIP: {e}")))?,
                );
                Ok(Provider {
                    kms: kms.clone(),
                    maker: KeyMaker::Kmip(kms),
                })
            }
            #[allow(unreachable_patterns)] // every provider built in
            other => Err(not_built(other.name())),
        }
    }

    /// Creates a master key in the provider; `label` names it where the provider keeps
    /// names (PKCS#11).
    pub(crate) async fn create_key(&self, label: &str) -> CliResult<cmk_core::kms::KeyRef> {
        let failed =
            |e: cmk_core::kms::KmsError| CliError::new(Exit::Kms, format!("creating a key: {e}"));
        let _ = label;
        match &self.maker {
            #[cfg(feature = "aws")]
            KeyMaker::Aws(kms) => kms.create_key(label).await.map_err(failed),
            #[cfg(feature = "pkcs11")]
            KeyMaker::Pkcs11(kms, token) => kms.create_key(token, label).await.map_err(failed),
            #[cfg(feature = "kmip")]
            KeyMaker::Kmip(kms) => kms.create_key().await.map_err(failed),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = failed;
                Err(CliError::new(Exit::Usage, "no provider built in"))
            }
        }
    }
}
