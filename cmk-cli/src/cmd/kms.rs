//! `cmk kms`: the providers of HOME/kms.toml.

use serde_json::json;

use crate::cli::KmsCommand;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Paths;
use crate::output::print;

pub(crate) async fn run(paths: &Paths, json: bool, command: KmsCommand) -> CliResult {
    let providers = paths.providers().await?;
    match command {
        KmsCommand::List => {
            let listed: Vec<_> = providers.iter().map(|(spec, _)| spec.describe()).collect();
            print(json, &json!({ "providers": listed }), || {
                let mut out = format!("local (keyring {})", paths.keyring().display());
                for (spec, _) in &providers {
                    out.push_str(&format!("\n{}", spec.describe()));
                }
                out
            });
            Ok(())
        }
        KmsCommand::CreateKey { provider, label } => {
            let (_, found) = providers
                .iter()
                .find(|(spec, _)| spec.name() == provider)
                .ok_or_else(|| {
                    CliError::new(
                        Exit::Usage,
                        format!(
                            "no provider `{provider}` in kms.toml (the local keyring's keys: `cmk keyring create`)"
                        ),
                    )
                })?;
            let key = found.create_key(&label).await?;
            print(
                json,
                &json!({ "provider": provider, "key": key.as_str() }),
                || format!("created {key}"),
            );
            Ok(())
        }
    }
}
