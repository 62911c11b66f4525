//! `stepgate admin ...`: token management, which works on the configured
//! store directly, and the help desk's commands, which are calls to the
//! admin API.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::api::{AuditFilter, TicketRequest, UserFilter};
use super::auth::{create_token, NewToken};
use super::client::AdminClient;
use super::text;
use crate::audit::{AuditLog, Event, Kind, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// The actor of token changes made on the command line.
const COMMAND_LINE_ACTOR: &str = "command-line";
/// How often `audit follow` asks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct AdminArgs {
    /// The admin API, e.g. `https://127.0.0.1:9443`.
    #[arg(long, global = true)]
    url: Option<String>,
    /// A file holding an API token (from `stepgate admin token create`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the API's TLS, besides the system's.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create, list and revoke API tokens (in the configured store).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    #[command(flatten)]
    Api(ApiCommand),
}

/// The commands that are calls to the admin API.
#[derive(Subcommand)]
enum ApiCommand {
    /// Users and their MFA state.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// A user's second factors.
    Factors {
        #[command(subcommand)]
        command: FactorsCommand,
    },
    /// All of a user's MFA at once.
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// A user's sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Forget failed attempts.
    Throttle {
        #[command(subcommand)]
        command: ThrottleCommand,
    },
    /// Give a user a new set of recovery codes (printed once).
    RecoveryCodes { user: String },
    /// Enrolment tickets: one-time links to enrol a factor without a lost one.
    Ticket {
        #[command(subcommand)]
        command: TicketCommand,
    },
    /// The audit log of security events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown this once).
    Create {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// users:read, factors:write, sessions:write, throttles:write,
        /// tickets:write, audit:read, metrics:read
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
        /// Limit the token to the users of these groups (B2B delegation).
        #[arg(long, num_args = 1..)]
        groups: Vec<String>,
        /// For how long the token is valid, e.g. 90d (default: until revoked).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Every token, with its scopes, groups and expiry (never the token).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke a token by name; it stops working at once.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
}

impl TokenCommand {
    /// The configuration whose store holds the tokens.
    fn config(&self) -> &std::path::Path {
        match self {
            TokenCommand::Create { config, .. } | TokenCommand::List { config } | TokenCommand::Revoke { config, .. } => config,
        }
    }
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Every user the token may see.
    List {
        /// Part of the user name, display name or email.
        #[arg(long)]
        q: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    /// One user's factors, recovery codes, sessions and trusted browsers.
    Show { user: String },
}

#[derive(Subcommand)]
enum FactorsCommand {
    /// Remove one factor (`totp` or `webauthn:ID`, as `users show` lists them).
    Delete { user: String, factor: String },
}

#[derive(Subcommand)]
enum MfaCommand {
    /// Remove all factors, recovery codes and known browsers; end the sessions.
    Reset { user: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// End every session of the user.
    End { user: String },
}

#[derive(Subcommand)]
enum ThrottleCommand {
    /// Lift the throttle on a user name or a client address.
    Lift { target: String },
}

#[derive(Subcommand)]
enum TicketCommand {
    /// Make a ticket for a user and print its link (shown this once).
    Create {
        user: String,
        /// The app's origin the link points at, e.g. https://intranet.example.com.
        #[arg(long)]
        base_url: Option<String>,
        /// How long the link stays valid, e.g. 24h (the default), 3d.
        #[arg(long)]
        expires: Option<String>,
    },
}

#[derive(Args, Clone)]
struct AuditArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    actor: Option<String>,
    /// An event kind, e.g. sign_in, mfa_reset.
    #[arg(long)]
    kind: Option<String>,
    /// Only events this recent, e.g. 1h, 7d.
    #[arg(long)]
    since: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The latest events, oldest first.
    List {
        #[command(flatten)]
        filter: AuditArgs,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print events as they happen.
    Follow {
        #[command(flatten)]
        filter: AuditArgs,
    },
}

/// Runs an admin command; what it prints, or why it failed.
pub async fn run(args: AdminArgs) -> Result<(), String> {
    match args.command {
        AdminCommand::Token { command } => token(command).await,
        AdminCommand::Api(command) => {
            let client = client(args.url, args.token_file, args.ca_file)?;
            api(&client, command, args.json).await
        }
    }
}

fn client(url: Option<String>, token_file: Option<PathBuf>, ca_file: Option<PathBuf>) -> Result<AdminClient, String> {
    let url = url.ok_or("--url is needed: the admin API's address, e.g. https://127.0.0.1:9443")?;
    let token_file = token_file.ok_or("--token-file is needed: a file holding an API token")?;
    let token = std::fs::read_to_string(&token_file).map_err(|e| format!("{}: {e}", token_file.display()))?;
    AdminClient::new(&url, &token, ca_file.as_deref()).map_err(|e| e.to_string())
}

async fn token(command: TokenCommand) -> Result<(), String> {
    let config = Config::load(command.config()).map_err(|e| e.to_string())?;
    let now = SystemClock.now();
    let store = crate::gateway::store_choice(&config).map_err(|e| e.to_string())?;
    let store = crate::store::open(&store).await.map_err(|e| e.to_string())?;
    let audit = AuditLog::new(store.clone(), std::sync::Arc::new(SystemClock));
    match command {
        TokenCommand::Create { name, scopes, groups, expires, .. } => {
            let lifetime = expires.map(|raw| crate::config::parse_duration(&raw)).transpose()?;
            let new = NewToken { name, scopes, groups, lifetime };
            let token = create_token(store.as_ref(), now, &new).await.map_err(|e| e.to_string())?;
            let event = Event::new(Kind::AdminTokenCreated, Outcome::Success).detail("token", new.name.as_str());
            audit.record(Event { actor: COMMAND_LINE_ACTOR.into(), ..event.detail("scopes", new.scopes) }).await;
            println!("{token}");
        }
        TokenCommand::List { .. } => {
            let tokens = store.admin_tokens().await.map_err(|e| e.to_string())?;
            print!("{}", text::tokens(&tokens, now));
        }
        TokenCommand::Revoke { name, .. } => {
            if !store.revoke_admin_token(&name).await.map_err(|e| e.to_string())? {
                return Err(format!("there is no token named `{name}`"));
            }
            let event = Event::new(Kind::AdminTokenRevoked, Outcome::Success).detail("token", name.as_str());
            audit.record(Event { actor: COMMAND_LINE_ACTOR.into(), ..event }).await;
            println!("token `{name}` revoked");
        }
    }
    Ok(())
}

async fn api(client: &AdminClient, command: ApiCommand, json: bool) -> Result<(), String> {
    let failed = |e: super::client::ClientError| e.to_string();
    match command {
        ApiCommand::Users { command: UsersCommand::List { q, group } } => {
            let mut users = Vec::new();
            let mut cursor = None;
            loop {
                let filter = UserFilter { q: q.clone(), group: group.clone(), cursor, limit: None };
                let page = client.users(&filter).await.map_err(failed)?;
                users.extend(page.users);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            show(json, &users, text::users(&users));
        }
        ApiCommand::Users { command: UsersCommand::Show { user } } => {
            let user = client.user(&user).await.map_err(failed)?;
            show(json, &user, text::user(&user));
        }
        ApiCommand::Factors { command: FactorsCommand::Delete { user, factor } } => {
            client.delete_factor(&user, &factor).await.map_err(failed)?;
            println!("removed {factor} of {user}; the sessions that used it have ended");
        }
        ApiCommand::Mfa { command: MfaCommand::Reset { user } } => {
            let reset = client.reset_mfa(&user).await.map_err(failed)?;
            let table = format!(
                "reset {user}: {} factors, {} recovery codes, {} known browsers removed; {} sessions ended\n",
                reset.factors, reset.recovery_codes, reset.browsers, reset.sessions
            );
            show(json, &reset, table);
        }
        ApiCommand::Sessions { command: SessionsCommand::End { user } } => {
            let ended = client.end_sessions(&user).await.map_err(failed)?;
            show(json, &ended, format!("ended {} sessions of {user}\n", ended.sessions));
        }
        ApiCommand::Throttle { command: ThrottleCommand::Lift { target } } => {
            match target.parse::<IpAddr>() {
                Ok(address) => client.lift_address_throttle(address).await,
                Err(_) => client.lift_user_throttle(&target).await,
            }
            .map_err(failed)?;
            println!("lifted the throttle on {target}");
        }
        ApiCommand::RecoveryCodes { user } => {
            let codes = client.recovery_codes(&user).await.map_err(failed)?;
            show(json, &codes, codes.codes.join("\n") + "\n");
        }
        ApiCommand::Ticket { command: TicketCommand::Create { user, base_url, expires } } => {
            let lifetime = expires.map(|raw| crate::config::parse_duration(&raw)).transpose()?;
            let ticket = client.create_ticket(&user, &TicketRequest { lifetime, base_url }).await.map_err(failed)?;
            let link = ticket.url.clone().unwrap_or_else(|| format!("{} (on any app's host)", ticket.link));
            show(json, &ticket, format!("{link}\nvalid until {}\n", text::time(ticket.expires)));
        }
        ApiCommand::Audit { command: AuditCommand::List { filter, limit } } => {
            let filter = AuditFilter { limit: Some(limit), ..audit_filter(filter)? };
            let page = client.audit(&filter).await.map_err(failed)?;
            let mut events = page.events;
            events.reverse();
            show(json, &events, text::audit(&events));
        }
        ApiCommand::Audit { command: AuditCommand::Follow { filter } } => follow(client, audit_filter(filter)?, json).await?,
    }
    Ok(())
}

/// The API's JSON, or the table made of it.
fn show<T: serde::Serialize>(json: bool, value: &T, table: String) {
    match json {
        true => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        false => print!("{table}"),
    }
}

fn audit_filter(args: AuditArgs) -> Result<AuditFilter, String> {
    let kind = args.kind.map(|name| crate::audit::Kind::from_name(&name).ok_or(format!("unknown event kind `{name}`"))).transpose()?;
    let since = args.since.map(|raw| crate::config::parse_duration(&raw).map(|ago| SystemClock.now() - ago)).transpose()?;
    Ok(AuditFilter { user: args.user, actor: args.actor, kind, since, ..AuditFilter::default() })
}

/// Prints new events, oldest first, until interrupted.
async fn follow(client: &AdminClient, filter: AuditFilter, json: bool) -> Result<(), String> {
    let mut after = None;
    loop {
        let page = client.audit(&AuditFilter { after, ..filter.clone() }).await.map_err(|e| e.to_string())?;
        let mut events = page.events;
        events.reverse();
        if let Some(last) = events.last() {
            after = Some(last.id);
            match json {
                true => events.iter().for_each(|event| println!("{}", serde_json::to_string(event).unwrap_or_default())),
                false => print!("{}", text::audit(&events)),
            }
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}
