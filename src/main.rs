//! The command line. Each command is a thin call into the library.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use stepgate::clock::{Clock, SystemClock};
use stepgate::config::Config;
use stepgate::crypto::Secrets;
use stepgate::gateway::Gateway;
use stepgate::live::LiveGateway;
use stepgate::store::StoreChoice;

#[derive(Parser)]
#[command(name = "stepgate", version, about = "An MFA gateway in front of apps that know nothing about MFA")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from the running gateway, which
        /// is then sent SIGQUIT and exits once its requests are done.
        #[arg(long)]
        upgrade: bool,
    },
    /// Run the gateway in front of a built-in demo app, on loopback only.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where to keep the demo's database and keys (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration file and its users file, then exit.
    CheckConfig { file: PathBuf },
    /// Hash a password (from standard input or a prompt) for the users file.
    HashPassword,
    /// Print a new random encryption key (base64 of 32 bytes).
    GenerateKey,
    /// Manage the assertion signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the durable store (SQLite or PostgreSQL).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Help desk and customer admin commands (over the admin API), and
    /// the admin API's tokens.
    Admin(stepgate::admin::commands::AdminArgs),
    /// Inspect the access policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show which rule a request matches, why the earlier ones do not, the
    /// client's geo facts and risk, and the decision.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        host: String,
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        /// Explain as this user, signed in with a password.
        #[arg(long)]
        user: Option<String>,
        /// Assume the user did a second factor this many seconds ago.
        #[arg(long)]
        second_factor_age: Option<i64>,
        /// Assume this sign-in confidence (low, medium, high).
        #[arg(long, value_parser = parse_confidence)]
        confidence: Option<stepgate::config::Confidence>,
        /// Assume the user signed in on a browser they trust.
        #[arg(long)]
        trusted_browser: bool,
    },
}

fn parse_confidence(raw: &str) -> Result<stepgate::config::Confidence, String> {
    use stepgate::config::Confidence;
    match raw {
        "low" => Ok(Confidence::Low),
        "medium" => Ok(Confidence::Medium),
        "high" => Ok(Confidence::High),
        _ => Err("use low, medium or high".into()),
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key; the previous one stays in the JWKS until no
    /// assertion it signed can still be alive.
    Rotate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Bring the configured store's schema up to date (every start does it too).
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy enrolments, recovery codes, known browsers, sign-in history,
    /// signing keys, admin tokens, enrolment tickets and the audit log (not
    /// sessions) from one store to another. A store is `sqlite:DATA_DIR` or
    /// a `postgres://` URL.
    Copy {
        #[arg(long, required_unless_present = "from_env")]
        from: Option<String>,
        /// Read the source location from this environment variable instead.
        #[arg(long, conflicts_with = "from")]
        from_env: Option<String>,
        #[arg(long, required_unless_present = "to_env")]
        to: Option<String>,
        /// Read the target location from this environment variable instead,
        /// so a password need not be on the command line.
        #[arg(long, conflicts_with = "to")]
        to_env: Option<String>,
        /// Replace whatever the target holds.
        #[arg(long)]
        overwrite: bool,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stepgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config, upgrade } => serve(&config, upgrade),
        Command::Demo { listen, data_dir } => {
            if !listen.ip().is_loopback() {
                return Err("the demo only listens on loopback addresses".into());
            }
            stepgate::demo::run(listen, data_dir).map_err(|e| e.to_string())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file).map_err(|e| e.to_string())?;
            if let Some(users_file) = &config.users_file {
                stepgate::users::Directory::load(users_file).map_err(|e| e.to_string())?;
            }
            let geo = stepgate::geo::GeoDatabases::open_for(&config).map_err(|e| e.to_string())?;
            println!("{}: ok ({} apps)", file.display(), config.apps.len());
            for file in geo.uses() {
                println!("geoip: {file}");
            }
            Ok(())
        }
        Command::Admin(args) => block_on(stepgate::admin::commands::run(args)),
        Command::HashPassword => {
            let password = read_password()?;
            println!("{}", stepgate::users::hash_password(&password));
            Ok(())
        }
        Command::GenerateKey => {
            println!("{}", stepgate::crypto::generate_master_key());
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Explain { config, host, path, method, ip, user, second_factor_age, confidence, trusted_browser },
        } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|e| e.to_string())?;
            let question = stepgate::inspect::Question {
                host,
                path,
                method,
                ip,
                user,
                second_factor_age,
                confidence,
                trusted_browser,
                now: SystemClock.now(),
            };
            print!("{}", stepgate::inspect::explain(&config, &question).map_err(|e| e.to_string())?);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate { config } } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let secrets = Secrets::load(config.secrets.encryption_key_file.as_deref()).map_err(|e| e.to_string())?;
            let kid = block_on(async {
                let store = stepgate::store::open(&store_choice(&config)?).await.map_err(|e| e.to_string())?;
                stepgate::assertion::rotate_keys(
                    stepgate::store::key_store(store).as_ref(),
                    &secrets,
                    SystemClock.now(),
                    config.assertion.lifetime,
                )
                .await
                .map_err(|e| e.to_string())
            })?;
            println!("new signing key {kid}; running gateways pick it up within seconds");
            Ok(())
        }
        Command::Store { command: StoreCommand::Migrate { config } } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let store = store_choice(&config)?;
            block_on(stepgate::store::migrate(&store))?;
            println!("the store is up to date");
            Ok(())
        }
        Command::Store { command: StoreCommand::Copy { from, from_env, to, to_env, overwrite } } => {
            let from = store_location(from, from_env)?;
            let to = store_location(to, to_env)?;
            let report = block_on(stepgate::store::copy_between(&from, &to, overwrite))?;
            println!("copied:\n{report}");
            Ok(())
        }
    }
}

/// The store the configuration's `[store]` names.
fn store_choice(config: &Config) -> Result<StoreChoice, String> {
    stepgate::gateway::store_choice(config).map_err(|e| e.to_string())
}

/// A store location given on the command line or in an environment variable.
fn store_location(given: Option<String>, env: Option<String>) -> Result<StoreChoice, String> {
    let location = match (given, env) {
        (Some(location), _) => location,
        (None, Some(var)) => std::env::var(&var).map_err(|_| format!("the environment variable {var} is not set"))?,
        (None, None) => return Err("a store location is missing".into()),
    };
    StoreChoice::parse_location(&location).map_err(|e| e.to_string())
}

fn block_on<T, E: std::fmt::Display>(work: impl std::future::Future<Output = Result<T, E>>) -> Result<T, String> {
    tokio::runtime::Runtime::new().map_err(|e| e.to_string())?.block_on(work).map_err(|e| e.to_string())
}

fn serve(config_path: &std::path::Path, upgrade: bool) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let _log_writer = stepgate::logging::init(&config.logging);
    stepgate::server::check_listeners(&config.server, upgrade).map_err(|e| e.to_string())?;
    // A runtime for start-up and upkeep; pingora runs its own for traffic.
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let gateway = runtime.block_on(Gateway::build(config, Arc::new(SystemClock), None)).map_err(|e| e.to_string())?;
    let live = LiveGateway::new(gateway, Some(config_path.to_path_buf()));
    let _admin = runtime.block_on(async { stepgate::admin::start(live.clone()) }).map_err(|e| e.to_string())?;
    runtime.spawn(live.clone().maintain());
    let served = stepgate::server::serve(live, upgrade);
    // Upkeep caught in a reload must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served.map_err(|e| e.to_string())
}

fn read_password() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?
    } else {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map_err(|e| e.to_string())?;
        input.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password)
}
