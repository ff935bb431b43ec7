use clap::{Parser, Subcommand, ValueEnum};
use pons::config::Config;
use pons::dimse::client::{verification_proposal, ScuAssociation, ScuConfig};
use pons::jobs::JobState;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "pons", version, about = "DIMSE ⇄ DICOMweb gateway")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and print every problem in it.
    CheckConfig { config: PathBuf },
    /// Send a C-ECHO to AE@HOST:PORT and print the answer.
    Echo {
        /// Called AE title, host and port, e.g. ORTHANC@127.0.0.1:4242
        target: String,
        #[arg(long, default_value = "PONS")]
        calling_ae: String,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// List the job table (newest first), or show one job.
    Jobs {
        #[command(subcommand)]
        show: Option<JobsCommand>,
        /// Only jobs of this kind (e.g. stow).
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_parser = ["pending", "running", "done", "failed"])]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The config whose [jobs] url names the table.
        #[arg(long, short, global = true, default_value = "/etc/pons/pons.toml")]
        config: PathBuf,
    },
    /// Read a secret on stdin and print its hash for [web.auth]: argon2
    /// (a user's password_hash), or SHA-256 (a bearer token's sha256).
    HashSecret {
        #[arg(long)]
        sha256: bool,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Print one job as JSON.
    Show { id: i64 },
    /// Delete finished (done or failed) jobs older than DAYS, and refused
    /// spool files as old (the daemon does this by [jobs] retention_days).
    Purge {
        #[arg(long, value_name = "DAYS")]
        older_than: u64,
    },
    /// Send a failed job again (e.g. a refused instance, once its cause is
    /// fixed): pending at once, attempts reset, its file back from failed/.
    Retry { id: i64 },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // One crypto provider for every TLS wire (rustls, reqwest, dicom-ul).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("pons {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::HashSecret { sha256 } => {
            let mut secret = String::new();
            if std::io::stdin().read_line(&mut secret).is_err() || secret.trim().is_empty() {
                eprintln!("give the secret on stdin, e.g. printf %s \"$TOKEN\" | pons hash-secret --sha256");
                return ExitCode::from(2);
            }
            match pons::web::auth::hash_secret(secret.trim_end_matches(['\r', '\n']), sha256) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Echo {
            target,
            calling_ae,
            timeout_secs,
        } => {
            init_logs(cli.log_format);
            runtime().block_on(echo(&target, &calling_ae, timeout_secs))
        }
        Command::Jobs {
            show,
            kind,
            state,
            limit,
            config,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let state = state.as_deref().and_then(JobState::parse);
            runtime().block_on(jobs(&config, show, kind.as_deref(), state, limit))
        }
        Command::Serve { config } => {
            init_logs(cli.log_format);
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            runtime().block_on(serve(config))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Multi-thread: parts of dicom-ul call block_in_place, which panics on a
    // current-thread runtime.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn serve(config: Config) -> ExitCode {
    // SIGHUP re-reads TLS certificates (where configured); it never ends
    // the process, as its default action would (`systemctl reload`).
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: TLS certificates are read again; nothing else reloads");
            }
        });
    }
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        signals.cancel();
        // A second signal means "now".
        wait_for_signal().await;
        tracing::warn!("second signal; exiting at once");
        std::process::exit(130);
    });
    match pons::app::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn jobs(
    config: &Config,
    show: Option<JobsCommand>,
    kind: Option<&str>,
    state: Option<JobState>,
    limit: usize,
) -> ExitCode {
    // Only reads: the node name is never used to claim.
    let table = match pons::jobs::open(&config.jobs.url, "pons-jobs-cli").await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match show {
        Some(JobsCommand::Show { id }) => table.get(id).await.map(|job| match job {
            Some(job) => {
                println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("no job {id}");
                ExitCode::FAILURE
            }
        }),
        Some(JobsCommand::Purge { older_than }) => {
            let age = Duration::from_secs(older_than.saturating_mul(86_400));
            return match pons::spool::purge(table.as_ref(), &spool_dirs(config), age).await {
                Ok((rows, files)) => {
                    println!("purged {rows} finished jobs and {files} refused spool files older than {older_than} days");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(JobsCommand::Retry { id }) => {
            return match pons::spool::retry_failed(table.as_ref(), id).await {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => table.list(kind, state, limit).await.map(|jobs| {
            print!("{}", pons::jobs::report::table(&jobs));
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

async fn echo(target: &str, calling_ae: &str, timeout_secs: u64) -> ExitCode {
    let Some((ae, address)) = target.split_once('@') else {
        eprintln!("target must look like AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242");
        return ExitCode::from(2);
    };
    let config = ScuConfig {
        calling_ae: calling_ae.to_owned(),
        called_ae: ae.to_owned(),
        address: address.to_owned(),
        max_pdu: 16_384,
        timeout: Duration::from_secs(timeout_secs),
        tls: None,
    };
    let started = std::time::Instant::now();
    let result = async {
        let mut assoc = ScuAssociation::connect(&config, &[verification_proposal()]).await?;
        let status = assoc.echo().await?;
        let _ = assoc.release().await;
        Ok::<u16, pons::dimse::DimseError>(status)
    }
    .await;
    match result {
        Ok(0) => {
            println!(
                "C-ECHO {target}: Success ({} ms)",
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("C-ECHO {target}: status {status:04X}H");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("C-ECHO {target} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every upstream's spool directory (only `spool.dir` without an upstream).
fn spool_dirs(config: &pons::config::Config) -> Vec<std::path::PathBuf> {
    let dirs: Vec<_> = pons::spool::layout(config)
        .into_iter()
        .map(|s| s.dir)
        .collect();
    if dirs.is_empty() {
        vec![config.spool.dir.clone()]
    } else {
        dirs
    }
}
