//! The command line: every command, its options and its `--help` example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Customer Managed Keys for applications on Diesel and SeaORM: the operator's tool.
#[derive(Debug, Parser)]
#[command(name = "cmk", version, about, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// The deployment's directory: keyring.json (local KMS), operator.key,
    /// config-floors.json and the event files, as `cmk::embedded::Embedded` keeps them.
    #[arg(long, global = true, env = "CMK_HOME", default_value = "cmk-data")]
    pub(crate) home: PathBuf,
    /// The database holding cmk's tables and the application's (sqlite://FILE,
    /// postgres://..., mysql://...); default: sqlite in HOME/cmk.sqlite3.
    #[arg(long, global = true, env = "CMK_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Keep tenant configurations in this TOML file (one signed table per tenant) instead of
    /// the database's cmk_tenant_config table.
    #[arg(long, global = true, env = "CMK_CONFIG_FILE")]
    pub(crate) config_file: Option<PathBuf>,
    /// The KMS providers besides the local keyring (AWS KMS, PKCS#11, KMIP); default:
    /// HOME/kms.toml when it exists.
    #[arg(long, global = true, env = "CMK_KMS_CONFIG")]
    pub(crate) kms_config: Option<PathBuf>,
    /// Machine-readable output (one JSON document, or JSON Lines for `audit tail`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

pub(crate) const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (verify: a row failed); \
2 usage; 3 unknown tenant; 4 database unreachable or failing; 5 KMS unreachable or refusing; \
6 malformed file (manifest, keyring, operator key, checkpoint, configuration file); 7 tampered or rolled-back \
configuration; 8 table without key columns; 9 tenant shredded; 130 interrupted (resumable).";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The local KMS's keyring (HOME/keyring.json).
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// The KMS providers of HOME/kms.toml: list them, create a master key in one.
    #[command(subcommand)]
    Kms(KmsCommand),
    /// Tenants: onboarding, configuration, policies.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tenant configurations: check every one; sign a table of the configuration file after
    /// editing it by hand.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A tenant's key-encryption keys: roll over, retire, destroy.
    #[command(subcommand)]
    Kek(KekCommand),
    /// Re-wraps a tenant's registry under a new master key; no row is touched.
    #[command(
        after_help = "Example:\n  cmk rotate-master --tenant acme --key local:acme-2026\n  cmk rotate-master --all-tenants"
    )]
    RotateMaster {
        /// The tenant.
        #[arg(long, required_unless_present = "all_tenants")]
        tenant: Option<String>,
        /// Every configured tenant, each to a new local key of its own.
        #[arg(long, conflicts_with_all = ["tenant", "key"])]
        all_tenants: bool,
        /// The new master key reference (default: a new local key `TENANT-<unix time>`).
        #[arg(long)]
        key: Option<String>,
    },
    /// Re-wraps every key column of a table under its class's active KEK (KEK retirement).
    #[command(
        after_help = "Example:\n  cmk kek roll-over --tenant acme\n  cmk rekey --table patients\n  cmk rekey --manifest /srv/app/manifests/patients.manifest.json\n\nResumable: an interrupted run (Ctrl-C, a crash) continues from its checkpoint."
    )]
    Rekey(TableJob),
    /// Seals the rows that still hold plaintext (every key column NULL): the backfill between
    /// a migration's expand and contract steps.
    #[command(
        after_help = "Example:\n  cmk migrate --table patients --from name=name_plain --from email=email_plain --from ssn=ssn_plain\n\nEach row is sealed from its plaintext columns and written only while its key columns are\nstill NULL; the plaintext columns are not cleared (dropping them is the contract step).\nRun it again after an interruption: rows already sealed are not selected again."
    )]
    Migrate(Migrate),
    /// Unseals every row of a table; lists failures by row id and kind.
    #[command(
        after_help = "Example:\n  cmk verify --table patients --json\n  cmk verify --manifest /srv/app/manifests/patients.manifest.json\n\nExits 1 when any row fails."
    )]
    Verify(TableArgs),
    /// Crypto-shreds a tenant: every key destroyed; its rows never read again.
    #[command(after_help = "Example:\n  cmk shred --tenant acme --confirm acme")]
    Shred {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The tenant id again: shredding cannot be undone.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Security events: the JSON Lines files of the application and of this tool.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum KmsCommand {
    /// The providers configured (where they are; never a credential or PIN).
    #[command(after_help = "Example:\n  cmk kms list --json")]
    List,
    /// Creates a master key in a provider and prints its key reference.
    #[command(
        after_help = "Example:\n  cmk kms create-key --provider pkcs11 --label acme-2026\n  cmk tenant onboard --tenant acme --key pkcs11:cmk/acme-2026"
    )]
    CreateKey {
        /// `aws`, `pkcs11` or `kmip`, as configured in kms.toml.
        #[arg(long)]
        provider: String,
        /// The key's label (PKCS#11) or description (AWS KMS).
        #[arg(long)]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Verifies every tenant's configuration (MAC, revision, fields) and names each failure's
    /// tenant, and its file line and field.
    #[command(
        after_help = "Example:\n  cmk --config-file /srv/cmk/tenants.toml config check\n  cmk config check --json\n\nExits 7 when a configuration was edited or rolled back, 6 when a table is invalid."
    )]
    Check,
    /// Signs a tenant's table of the configuration file after a hand edit: checks every
    /// field, provisions the keys a new class or key needs, then writes the MAC (nothing else
    /// in the file changes). Raise the table's revision first.
    #[command(
        after_help = "Example:\n  cmk --config-file /srv/cmk/tenants.toml config sign --tenant acme\n\nafter editing [tenants.acme] in /srv/cmk/tenants.toml and raising its revision."
    )]
    Sign {
        /// The tenant whose table was edited.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyringCommand {
    /// Creates an empty keyring if there is none.
    #[command(after_help = "Example:\n  cmk --home /srv/cmk keyring init")]
    Init,
    /// Lists keys, their versions and states.
    #[command(after_help = "Example:\n  cmk keyring list --json")]
    List,
    /// Creates a key.
    #[command(after_help = "Example:\n  cmk keyring create acme")]
    Create { name: String },
    /// Adds a version to a key (new wraps use it; older versions still unwrap).
    #[command(after_help = "Example:\n  cmk keyring rotate acme")]
    Rotate { name: String },
    /// Disables a key: every wrap and unwrap is refused (a tenant's revocation).
    #[command(after_help = "Example:\n  cmk keyring disable acme")]
    Disable { name: String },
    /// Enables a disabled key.
    #[command(after_help = "Example:\n  cmk keyring enable acme")]
    Enable { name: String },
    /// Destroys a key's material: whatever it wrapped is lost for good.
    #[command(after_help = "Example:\n  cmk keyring destroy acme --confirm acme")]
    Destroy {
        name: String,
        /// The key name again.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Copies the keyring to a file readable by its owner only.
    #[command(after_help = "Example:\n  cmk keyring backup --to /backup/keyring-2026-12-07.json")]
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Configures a tenant (first time) and provisions its keys, after proving its master key
    /// with a round trip. Running it again provisions what is missing.
    #[command(
        after_help = "Example:\n  cmk tenant onboard --tenant acme\n  cmk tenant onboard --tenant globex --key local:globex-master"
    )]
    Onboard {
        #[arg(long)]
        tenant: String,
        /// The master key (default: the local key named after the tenant, created if missing).
        #[arg(long)]
        key: Option<String>,
    },
    /// A tenant's configuration and keys (versions and states; no key material).
    #[command(after_help = "Example:\n  cmk tenant show --tenant acme --json")]
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Every configured tenant.
    #[command(after_help = "Example:\n  cmk tenant list")]
    List,
    /// Changes one class's policy (as a new configuration revision) and provisions its keys.
    #[command(
        after_help = "Example:\n  cmk tenant set-policy --tenant acme --class restricted --readers doctor,auditor --audit fail-closed"
    )]
    SetPolicy(SetPolicy),
}

#[derive(Debug, Args)]
pub(crate) struct SetPolicy {
    #[arg(long)]
    pub(crate) tenant: String,
    /// The class (created if the tenant has no policy for it).
    #[arg(long)]
    pub(crate) class: String,
    /// The master key that wraps this class's KEKs.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Search the class allows.
    #[arg(long, value_enum)]
    pub(crate) search: Option<Search>,
    /// Roles that may read, comma separated; an empty value lets every actor read.
    #[arg(long, value_delimiter = ',')]
    pub(crate) readers: Option<Vec<String>>,
    /// What happens when an access's event cannot be recorded.
    #[arg(long, value_enum)]
    pub(crate) audit: Option<Audit>,
    /// Lease renewal interval in seconds (revocation takes effect within it).
    #[arg(long)]
    pub(crate) renewal_secs: Option<u64>,
    /// Lease hard expiry in seconds (outages are ridden out until it).
    #[arg(long)]
    pub(crate) hard_expiry_secs: Option<u64>,
    /// Padding block in bytes for every field of the class.
    #[arg(long)]
    pub(crate) pad_to: Option<u16>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Search {
    None,
    BlindIndex,
    Deterministic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Audit {
    BestEffort,
    FailClosed,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KekCommand {
    /// Rolls classes over to a new KEK version now (default: every class of the tenant).
    #[command(after_help = "Example:\n  cmk kek roll-over --tenant acme --class private")]
    RollOver {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        class: Option<String>,
    },
    /// Makes a KEK version decrypt-only (a newer one must have been active for one renewal
    /// interval).
    #[command(after_help = "Example:\n  cmk kek retire --tenant acme --class private --version 1")]
    Retire {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        class: String,
        #[arg(long)]
        version: u32,
    },
    /// Destroys a decrypt-only KEK version (run `cmk rekey` first: rows still under it are lost).
    #[command(after_help = "Example:\n  cmk kek destroy --tenant acme --class private --version 1")]
    Destroy {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        class: String,
        #[arg(long)]
        version: u32,
    },
}

/// The table a command reads.
#[derive(Debug, Args)]
pub(crate) struct TableArgs {
    /// The table, by name: its manifest is HOME/manifests/TABLE.manifest.json (where
    /// `cmk::model::write_manifests` puts it).
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub(crate) table: Option<String>,
    /// The table's manifest file (`Model::manifest()`, `cmk::model::write_manifests`).
    #[arg(long)]
    pub(crate) manifest: Option<PathBuf>,
    /// Only this tenant's rows.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Rows per query.
    #[arg(long, default_value_t = 500)]
    pub(crate) chunk: u64,
}

impl TableArgs {
    /// The manifest file: given, or the table's in HOME/manifests.
    pub(crate) fn manifest_path(&self, home: &std::path::Path) -> PathBuf {
        match (&self.manifest, &self.table) {
            (Some(path), _) => path.clone(),
            (None, Some(table)) => home
                .join("manifests")
                .join(format!("{table}.manifest.json")),
            (None, None) => PathBuf::new(),
        }
    }
}

/// A resumable job over a table.
#[derive(Debug, Args)]
pub(crate) struct TableJob {
    #[command(flatten)]
    pub(crate) table: TableArgs,
    /// Ignore a checkpoint left by an interrupted run and start from the first row.
    #[arg(long)]
    pub(crate) from_start: bool,
}

/// The plaintext backfill.
#[derive(Debug, Args)]
pub(crate) struct Migrate {
    #[command(flatten)]
    pub(crate) table: TableArgs,
    /// COLUMN=PLAINTEXT_COLUMN for every classified column: where its plaintext is read.
    #[arg(long = "from", value_parser = column_mapping, required = true)]
    pub(crate) from: Vec<(String, String)>,
}

fn column_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((sealed, plain)) if !sealed.is_empty() && !plain.is_empty() => {
            Ok((sealed.to_string(), plain.to_string()))
        }
        _ => Err(format!("`{s}` is not COLUMN=PLAINTEXT_COLUMN")),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The last events (HOME/events.jsonl and HOME/cli-events.jsonl, merged by time).
    #[command(after_help = "Example:\n  cmk audit tail -n 50 --follow --tenant acme")]
    Tail {
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing events as they arrive (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
    },
}
