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
        Command::Serve { config } => serve(&config),
        Command::Demo { listen, data_dir } => {
            if !listen.ip().is_loopback() {
                return Err("the demo only listens on loopback addresses".into());
            }
            stepgate::demo::run(listen, data_dir).map_err(|e| e.to_string())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file).map_err(|e| e.to_string())?;
            stepgate::users::Directory::load(&config.users_file).map_err(|e| e.to_string())?;
            println!("{}: ok ({} apps)", file.display(), config.apps.len());
            Ok(())
        }
        Command::HashPassword => {
            let password = read_password()?;
            println!("{}", stepgate::users::hash_password(&password));
            Ok(())
        }
        Command::GenerateKey => {
            println!("{}", stepgate::crypto::generate_master_key());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate { config } } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let secrets = Secrets::load(config.secrets.encryption_key_file.as_deref()).map_err(|e| e.to_string())?;
            let kid = stepgate::assertion::rotate_keys(&config.server.data_dir, &secrets, SystemClock.now(), config.assertion.lifetime)
                .map_err(|e| e.to_string())?;
            println!("new signing key {kid}; running gateways pick it up within seconds");
            Ok(())
        }
    }
}

fn serve(config_path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let _log_writer = stepgate::logging::init(&config.logging);
    // A runtime for start-up and upkeep; pingora runs its own for traffic.
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let gateway = runtime.block_on(Gateway::build(config, Arc::new(SystemClock), None)).map_err(|e| e.to_string())?;
    runtime.spawn(gateway.clone().maintain());
    let server = stepgate::server::build_server(gateway).map_err(|e| e.to_string())?;
    stepgate::server::run(server, None);
    Ok(())
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
