//! The command line: the subcommands and their arguments. Each command's code is in
//! [`crate::commands`].

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hookd_config::LogFormat;
use hookd_core::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "hookd",
    version,
    about = "Verify, store and dispatch Protocol webhooks to WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Validate a configuration and report every problem.
    Check(CheckArgs),
    /// Print the signature Protocol would send for a body.
    Sign(SignArgs),
    /// Sign a body and POST it to a running hookd; print the answer.
    Send(SendArgs),
    /// Run one plugin once on one event, locally, and print the outcome and its logs.
    RunPlugin(RunPluginArgs),
    /// Dead letters: deliveries that failed for good.
    Dlq(DlqArgs),
    /// What the running daemon is doing: plugins, queue, deliveries, rejections, uptime.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration file, for the admin listener's address.
    #[arg(long, short, default_value = "/etc/hookd/hookd.toml")]
    pub config: PathBuf,
    /// The admin listener's address (instead of reading it from the config).
    #[arg(long)]
    pub admin: Option<std::net::SocketAddr>,
    /// Print the admin listener's JSON as is.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunPluginArgs {
    /// The plugin component (`NAME.wasm`).
    pub wasm: PathBuf,
    /// The event file (a Protocol webhook body, e.g. examples/events/message.created.json).
    #[arg(long)]
    pub event: PathBuf,
    /// The plugin's manifest, for its config, capabilities and limits (default: `NAME.toml`
    /// beside the component if there is one, else no capabilities and default limits).
    #[arg(long)]
    pub plugin_config: Option<PathBuf>,
    /// The attempt number the plugin sees.
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// The configuration file (for the store's location).
    #[arg(long, short, default_value = "/etc/hookd/hookd.toml", global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters pending again, with a fresh attempt budget.
    Replay {
        /// The event id whose dead deliveries to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        /// Only the deliveries of this plugin.
        #[arg(long)]
        plugin: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "/etc/hookd/hookd.toml")]
    pub config: PathBuf,
    /// Log format; overrides `[log] format`.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "/etc/hookd/hookd.toml")]
    pub config: PathBuf,
}

/// Where the signing secret comes from. Never argv: it would show in `ps` and shell history.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SecretArgs {
    /// A file holding the secret (a trailing newline is ignored).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[arg(long)]
    pub secret_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The body to sign, byte for byte (`-` for standard input).
    pub body_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The ingest URL, e.g. http://127.0.0.1:8080/webhooks
    #[arg(long)]
    pub url: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Replace the event's `id` with a fresh one, so the same file can be sent again without
    /// being a duplicate.
    #[arg(long)]
    pub new_id: bool,
    /// The event to send (`-` for standard input).
    pub body_file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Human,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(a: LogFormatArg) -> Self {
        match a {
            LogFormatArg::Auto => LogFormat::Auto,
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl SecretArgs {
    pub fn load(&self) -> anyhow::Result<Secret> {
        let entry = match (&self.secret_file, &self.secret_env) {
            (Some(path), _) => format!("file:{}", path.display()),
            (None, Some(name)) => format!("env:{name}"),
            (None, None) => anyhow::bail!("give --secret-file or --secret-env"),
        };
        hookd_config::SecretSource::parse(&entry)
            .resolve(Path::new(""))
            .map_err(anyhow::Error::msg)
    }
}
