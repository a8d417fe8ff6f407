//! `cmk`: the operator's command for Customer Managed Keys (see README.md and `cmk --help`).

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod cli;
mod cmd;
mod exit;
mod home;
mod output;
mod progress;
mod providers;
mod scan;
mod table;

use clap::Parser;

/// mimalloc instead of the system allocator: a table job allocates and frees buffers per
/// row and per chunk, and glibc's malloc took a fifth of a rekey's CPU. cmk zeroizes key
/// material itself before freeing it, whichever allocator returns the memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{AuditCommand, Cli, Command};
use crate::exit::CliResult;
use crate::home::{Deployment, Paths};
use crate::scan::Stop;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Two workers: `verify` reads the next chunk while it checks this one on both cores.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cmk: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cmk: {e}");
            std::process::ExitCode::from(e.exit as u8)
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let paths = Paths {
        dir: cli.home.clone(),
        config_file: cli.config_file.clone(),
        kms_config: cli.kms_config.clone(),
    };
    let url = cli.database_url.as_deref();
    let json = cli.json;
    match cli.command {
        Command::Keyring(command) => cmd::keyring::run(&paths, json, command),
        Command::Audit(AuditCommand::Tail {
            lines,
            follow,
            tenant,
        }) => {
            let stop = Stop::on_signals();
            cmd::audit::tail(&paths, json, lines, follow, tenant.as_deref(), &stop).await
        }
        Command::Tenant(command) => {
            let create = matches!(command, cli::TenantCommand::Onboard { .. });
            let d = Deployment::open(&paths, url, create).await?;
            cmd::tenant::run(&d, json, command).await
        }
        Command::Kek(command) => {
            let d = Deployment::open(&paths, url, false).await?;
            cmd::admin::kek(&d, json, command).await
        }
        Command::RotateMaster {
            tenant,
            all_tenants,
            key,
        } => {
            let d = Deployment::open(&paths, url, false).await?;
            match tenant {
                Some(tenant) if !all_tenants => {
                    cmd::admin::rotate_master(&d, json, &tenant, key).await
                }
                _ => cmd::admin::rotate_all(&d, json).await,
            }
        }
        Command::Shred { tenant, confirm } => {
            let d = Deployment::open(&paths, url, false).await?;
            cmd::admin::shred(&d, json, &tenant, confirm.as_deref()).await
        }
        Command::Rekey(job) => {
            let d = Deployment::open(&paths, url, false).await?;
            let stop = Stop::on_signals();
            cmd::rekey::run(&d, json, job, &stop).await
        }
        Command::Migrate(args) => {
            let d = Deployment::open(&paths, url, false).await?;
            let stop = Stop::on_signals();
            cmd::migrate::run(&d, json, args, &stop).await
        }
        Command::Kms(command) => cmd::kms::run(&paths, json, command).await,
        Command::Config(command) => {
            let d = Deployment::open(&paths, url, false).await?;
            cmd::config::run(&d, json, command).await
        }
        Command::Verify(args) => {
            let d = Deployment::open(&paths, url, false).await?;
            let stop = Stop::on_signals();
            cmd::verify::run(&d, json, args, &stop).await
        }
    }
}
