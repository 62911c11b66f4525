//! Rule conditions written in CEL, the Common Expression Language of
//! Envoy, Kubernetes and Google's access levels: a rule's optional
//! `when = '...'`.
//!
//! An expression is compiled once, when the configuration loads, and
//! evaluated for a request only when every fixed condition of its rule
//! holds. It sees two variables:
//!
//! | variable | type | value |
//! | --- | --- | --- |
//! | `request.method` | string | `GET`, `POST`, ... |
//! | `request.path` | string | the normalized path |
//! | `request.query` | map string → string | query parameters, decoded (requests that repeat a name are refused at the edge) |
//! | `request.headers` | map string → string | request headers by lower-case name; repeated lines joined with `, ` |
//! | `request.ip` | string | the client address (after trusted proxies) |
//! | `request.geo.country` | string | ISO code, e.g. `CH`; `""` when unknown |
//! | `request.geo.continent` | string | code, e.g. `EU`; `""` when unknown |
//! | `request.geo.city` | string | English name; `""` when unknown |
//! | `request.geo.asn` | int | autonomous system number; `0` when unknown |
//! | `request.geo.anonymous` | bool | any Anonymous-IP flag (VPN, Tor, hosting, proxies) |
//! | `request.time.hour` | int | 0-23, in `[policy] time_zone` |
//! | `request.time.minute` | int | 0-59, likewise |
//! | `request.time.weekday` | int | 0 = Sunday ... 6 = Saturday, as CEL's `getDayOfWeek` |
//! | `user.name` | string | the user name |
//! | `user.groups` | list of strings | the user's groups |
//! | `user.second_factor_age` | int | seconds since the session's last second factor; `-1` when none |
//!
//! Checked at load: the syntax (errors give the line and column inside the
//! expression), top-level variables other than `request` and `user` (names
//! bound by macros such as `exists(g, ...)` are allowed), the fields of
//! `request`, `request.geo`, `request.time` and `user` written with dots,
//! functions the interpreter does not have, message literals (`Name{...}`),
//! which it cannot evaluate, and anything that crashes it on a made-up
//! request (a macro such as `exists` over a string).
//!
//! Panics: cel-interpreter 0.10 panics on some incomplete expressions while
//! parsing (then [`syntax`] finds the error's position) and on a few
//! constructs while evaluating. Both are caught; the process's panic hook is
//! wrapped, once, so that these print nothing, as their messages may hold
//! request values such as headers. Other panics print as before.
//!
//! The user: an expression "uses the user" when its compiled program
//! references the variable `user` ([`Program::references`]). For a visitor
//! nobody is signed in as, `user` is left undeclared; if the expression's
//! value then still comes out (`request.geo.country == "CH" || "admins" in
//! user.groups` from Zurich), it stands; if evaluating it needs the user, the
//! rule asks for sign-in first, like a rule with `users` or `groups`.
//!
//! A result that is not a bool, an evaluation error (a missing map key, a
//! type mismatch) or a panic inside the interpreter is "no match"; the
//! reason is logged at debug level without the values involved.
//!
//! `request.ip`, `request.headers`, `request.query`, `request.geo` and
//! `request.time` are only filled in when the expression's text mentions
//! `ip`, `headers`, `query`, `geo` or `time`: an expression that reaches
//! them by computed names (`request["hea" + "ders"]`) sees them empty.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Once};

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, Program, Value};
use chrono::{Datelike, Timelike};
use regex::Regex;

use crate::methods::{MethodSet, MethodTimes};
use super::conditions::{is_anonymous, Mismatch};
use super::{Request, Subject};
use crate::config::{Anonymity, PolicyConfig};

/// A compiled `when` expression and its source text. Cheap to clone.
#[derive(Clone)]
pub struct Expression {
    inner: Arc<Inner>,
}

struct Inner {
    program: Program,
    source: String,
    uses: Uses,
}

/// Which parts of the context the expression may read.
#[derive(Debug, Clone, Copy)]
struct Uses {
    user: bool,
    ip: bool,
    headers: bool,
    query: bool,
    geo: bool,
    time: bool,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.inner.source).finish()
    }
}

/// Why an expression did not give true or false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It needs `user` and nobody is signed in.
    NeedsIdentity,
    /// Not a bool, or an evaluation error: what went wrong, without values.
    Error(String),
    /// The interpreter panicked.
    Panic,
}

const VARIABLES: [&str; 2] = ["request", "user"];
const REQUEST_FIELDS: [&str; 7] = ["method", "path", "query", "headers", "ip", "geo", "time"];
const GEO_FIELDS: [&str; 5] = ["country", "continent", "city", "asn", "anonymous"];
const TIME_FIELDS: [&str; 3] = ["hour", "minute", "weekday"];
const USER_FIELDS: [&str; 3] = ["name", "groups", "second_factor_age"];

/// The operators (as the parser names them) the interpreter evaluates.
const OPERATORS: [&str; 19] = [
    "_?_:_", "_&&_", "_||_", "!_", "-_", "_-_", "_+_", "_*_", "_/_", "_%_", "_==_", "_!=_", "_>=_", "_<=_", "_>_",
    "_<_", "_[_]", "@in", "@not_strictly_false",
];

impl Expression {
    /// Parses and checks `source`. The error says what is wrong and, where
    /// it can, at which line and column of the expression.
    pub fn compile(source: &str) -> Result<Expression, String> {
        install_quiet_hook();
        let program = match quietly(|| Program::compile(source)) {
            Ok(Ok(program)) => program,
            Ok(Err(errors)) => {
                // Besides the grammar's errors, the parser may add vaguer
                // ones ("Incomplete `IndexContext`!") at the start.
                let grammar = |e: &&cel_interpreter::ParseError| e.msg.starts_with("Syntax error");
                let keep_all = !errors.errors.iter().any(|e| grammar(&e));
                let errors: Vec<String> = errors
                    .errors
                    .iter()
                    .filter(|e| keep_all || grammar(e))
                    .map(|e| {
                        let what = e.msg.trim().trim_start_matches("Syntax error: ");
                        format!("line {}, column {}: {what}", e.pos.0, e.pos.1)
                    })
                    .collect();
                return Err(format!("syntax error at {}", errors.join("; ")));
            }
            // The parser (cel-parser 0.10) panics on some incomplete
            // expressions (`a ==`, `!`, an unterminated string), losing its
            // errors: find the first one here.
            Err(_) => {
                return Err(match syntax::first_error(source) {
                    Some((offset, what)) => {
                        let (line, column) = position(source, offset);
                        format!("syntax error at line {line}, column {column}: {what}")
                    }
                    None => "the CEL parser failed on it".into(),
                })
            }
        };
        let code = code_only(source);
        check_names(source, &code, &program)?;
        let expression = Expression {
            inner: Arc::new(Inner {
                uses: Uses {
                    user: program.references().has_variable("user"),
                    ip: source.contains("ip"),
                    headers: source.contains("headers"),
                    query: source.contains("query"),
                    geo: source.contains("geo"),
                    time: source.contains("time"),
                },
                program,
                source: source.to_string(),
            }),
        };
        expression.probe()?;
        Ok(expression)
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether the expression may read the query string.
    pub fn reads_query(&self) -> bool {
        self.inner.uses.query
    }

    /// Whether the expression reads `user`.
    pub fn uses_user(&self) -> bool {
        self.inner.uses.user
    }

    /// Evaluates the expression for `request` and `subject`.
    pub(crate) fn evaluate(
        &self,
        request: &Request,
        settings: &PolicyConfig,
        subject: Option<&Subject>,
    ) -> Result<bool, Failure> {
        let uses = self.inner.uses;
        let mut context = ROOT.new_inner_scope();
        context.add_variable_from_value("request", request_value(request, settings, uses));
        if let (true, Some(subject)) = (uses.user, subject) {
            context.add_variable_from_value("user", user_value(subject, request.now));
        }
        match quietly(|| self.inner.program.execute(&context)) {
            Ok(Ok(Value::Bool(value))) => Ok(value),
            Ok(Ok(other)) => Err(Failure::Error(format!("the result is {}, not a bool", other.type_of()))),
            Ok(Err(ExecutionError::UndeclaredReference(name))) if subject.is_none() && name.as_str() == "user" => {
                Err(Failure::NeedsIdentity)
            }
            Ok(Err(error)) => Err(Failure::Error(describe(&error))),
            Err(_) => Err(Failure::Panic),
        }
    }

    /// Evaluates the expression once on a made-up request, signed in, so
    /// that what always crashes the interpreter (a macro such as `exists`
    /// over a string) is refused at load rather than at every request.
    fn probe(&self) -> Result<(), String> {
        let (method, headers, geo) = (http::Method::GET, http::HeaderMap::new(), crate::geo::GeoFacts::default());
        let request = Request {
            method_override: None,
            method: &method,
            path: "/",
            query: None,
            headers: &headers,
            ip: std::net::IpAddr::from([192, 0, 2, 1]),
            geo: &geo,
            now: 0,
        };
        let subject = Subject {
            username: "",
            groups: &[],
            second_factors: MethodTimes::default(),
            trusted_browser: false,
            confidence: crate::config::Confidence::High,
        };
        match self.evaluate(&request, &PolicyConfig::default(), Some(&subject)) {
            Err(Failure::Panic) => Err("the CEL interpreter cannot evaluate it (is a macro such as `exists` or `all` \
                                        applied to something other than a list or a map?)"
                .into()),
            _ => Ok(()),
        }
    }
}

/// Turns the result of a check into the rule's mismatch, logging why an
/// expression failed.
pub(crate) fn verdict(result: Result<bool, Failure>, line: usize) -> Result<(), Mismatch> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Mismatch::Expression),
        Err(Failure::NeedsIdentity) => Err(Mismatch::NeedsIdentity),
        Err(Failure::Error(why)) => {
            tracing::debug!(rule_line = line, %why, "a rule's `when` expression failed; counted as no match");
            Err(Mismatch::Expression)
        }
        Err(Failure::Panic) => {
            tracing::debug!(rule_line = line, "a rule's `when` expression crashed the interpreter; counted as no match");
            Err(Mismatch::Expression)
        }
    }
}

/// The interpreter's built-in functions; variables go in a child scope per
/// evaluation.
static ROOT: LazyLock<Context<'static>> = LazyLock::new(Context::default);

/// The field names, built once.
struct Names {
    method: Key,
    path: Key,
    query: Key,
    headers: Key,
    ip: Key,
    geo: Key,
    time: Key,
    country: Key,
    continent: Key,
    city: Key,
    asn: Key,
    anonymous: Key,
    hour: Key,
    minute: Key,
    weekday: Key,
    name: Key,
    groups: Key,
    second_factor_age: Key,
}

static NAMES: LazyLock<Names> = LazyLock::new(|| Names {
    method: "method".into(),
    path: "path".into(),
    query: "query".into(),
    headers: "headers".into(),
    ip: "ip".into(),
    geo: "geo".into(),
    time: "time".into(),
    country: "country".into(),
    continent: "continent".into(),
    city: "city".into(),
    asn: "asn".into(),
    anonymous: "anonymous".into(),
    hour: "hour".into(),
    minute: "minute".into(),
    weekday: "weekday".into(),
    name: "name".into(),
    groups: "groups".into(),
    second_factor_age: "second_factor_age".into(),
});

static EMPTY_MAP: LazyLock<Value> = LazyLock::new(|| map(HashMap::new()));

fn map(entries: HashMap<Key, Value>) -> Value {
    Value::Map(Map { map: Arc::new(entries) })
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn request_value(request: &Request, settings: &PolicyConfig, uses: Uses) -> Value {
    let n = &*NAMES;
    let mut fields = HashMap::with_capacity(7);
    fields.insert(n.method.clone(), string(request.method.as_str()));
    fields.insert(n.path.clone(), string(request.path));
    fields.insert(n.ip.clone(), if uses.ip { Value::String(Arc::new(request.ip.to_string())) } else { string("") });
    fields.insert(n.query.clone(), if uses.query { query_value(request.query) } else { EMPTY_MAP.clone() });
    fields.insert(n.headers.clone(), if uses.headers { headers_value(request.headers) } else { EMPTY_MAP.clone() });
    fields.insert(n.geo.clone(), if uses.geo { geo_value(request) } else { EMPTY_MAP.clone() });
    fields.insert(n.time.clone(), if uses.time { time_value(request.now, settings) } else { EMPTY_MAP.clone() });
    map(fields)
}

fn query_value(query: Option<&str>) -> Value {
    let mut fields = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        fields.entry(Key::from(name.into_owned())).or_insert_with(|| Value::String(Arc::new(value.into_owned())));
    }
    map(fields)
}

/// Headers by name; repeated lines joined with commas, as HTTP reads them.
fn headers_value(headers: &http::HeaderMap) -> Value {
    let mut fields = HashMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let value = crate::edge::joined_header(headers, name).unwrap_or_default();
        fields.insert(Key::from(name.as_str()), Value::String(Arc::new(value)));
    }
    map(fields)
}

fn geo_value(request: &Request) -> Value {
    let (n, geo) = (&*NAMES, request.geo);
    let text = |value: &Option<String>| string(value.as_deref().unwrap_or(""));
    let fields = HashMap::from([
        (n.country.clone(), text(&geo.country)),
        (n.continent.clone(), text(&geo.continent)),
        (n.city.clone(), text(&geo.city)),
        (n.asn.clone(), Value::Int(geo.asn.map_or(0, i64::from))),
        (n.anonymous.clone(), Value::Bool(is_anonymous(geo, Anonymity::Any))),
    ]);
    map(fields)
}

fn time_value(now: i64, settings: &PolicyConfig) -> Value {
    let n = &*NAMES;
    let local = chrono::DateTime::from_timestamp(now, 0).map(|t| t.with_timezone(&settings.time_zone.0));
    let (hour, minute, weekday) = local.map_or((-1, -1, -1), |t| {
        (i64::from(t.hour()), i64::from(t.minute()), i64::from(t.weekday().num_days_from_sunday()))
    });
    let fields = HashMap::from([
        (n.hour.clone(), Value::Int(hour)),
        (n.minute.clone(), Value::Int(minute)),
        (n.weekday.clone(), Value::Int(weekday)),
    ]);
    map(fields)
}

fn user_value(subject: &Subject, now: i64) -> Value {
    let n = &*NAMES;
    let groups: Vec<Value> = subject.groups.iter().map(|g| string(g)).collect();
    let age = subject.second_factors.latest(MethodSet::ANY).map_or(-1, |at| (now - at).max(0));
    let fields = HashMap::from([
        (n.name.clone(), string(subject.username)),
        (n.groups.clone(), Value::List(Arc::new(groups))),
        (n.second_factor_age.clone(), Value::Int(age)),
    ]);
    map(fields)
}

/// What went wrong, naming types, keys and functions but never values
/// (they may be headers such as `Authorization`).
fn describe(error: &ExecutionError) -> String {
    use ExecutionError::*;
    match error {
        InvalidArgumentCount { expected, actual } => format!("expected {expected} arguments, got {actual}"),
        UnsupportedTargetType { target } => format!("unsupported target of type {}", target.type_of()),
        NotSupportedAsMethod { method, target } => format!("`{method}` is not a method of {}", target.type_of()),
        UnsupportedKeyType(value) => format!("a {} cannot be a map key", value.type_of()),
        UnexpectedType { got, want } => format!("expected {want}, got {got}"),
        NoSuchKey(key) => format!("no such key `{key}`"),
        UndeclaredReference(name) => format!("undeclared reference to `{name}`"),
        MissingArgumentOrTarget => "missing argument or target".into(),
        ValuesNotComparable(a, b) => format!("cannot compare {} with {}", a.type_of(), b.type_of()),
        UnsupportedUnaryOperator(op, value) => format!("unary `{op}` does not apply to {}", value.type_of()),
        UnsupportedBinaryOperator(op, a, b) => {
            format!("`{op}` does not apply to {} and {}", a.type_of(), b.type_of())
        }
        UnsupportedMapIndex(index) => format!("a {} cannot index a map", index.type_of()),
        UnsupportedListIndex(index) => format!("a {} cannot index a list", index.type_of()),
        UnsupportedIndex(value, index) => format!("a {} cannot index a {}", index.type_of(), value.type_of()),
        FunctionError { function, .. } => format!("function `{function}` failed"),
        DivisionByZero(_) => "division by zero".into(),
        RemainderByZero(_) => "remainder by zero".into(),
        Overflow(op, ..) => format!("overflow in `{op}`"),
        _ => "evaluation error".into(),
    }
}

thread_local! {
    /// Set while this thread runs the interpreter: its panics are caught
    /// and must not print (their messages may hold request values).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the panic hook, once, so that it stays silent for panics inside
/// [`quietly`] and behaves as before everywhere else.
fn install_quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error without printing it.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let was = QUIET.with(|quiet| quiet.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|quiet| quiet.set(was));
    result
}

/// Checks variables, fields and functions; the messages give the position
/// inside the expression where there is one.
fn check_names(source: &str, code: &str, program: &Program) -> Result<(), String> {
    static BOUND: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\.\s*(?:all|exists|exists_one|existsOne|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,").expect("a constant, valid regex")
    });
    static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").expect("a constant, valid regex"));
    static FIELDS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(request|user)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s*\.\s*([A-Za-z_][A-Za-z0-9_]*))?").expect("a constant, valid regex")
    });
    static MESSAGE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z_][A-Za-z0-9_]*\s*\{").expect("a constant, valid regex"));

    let at = |offset: usize| {
        let (line, column) = position(source, offset);
        format!("at line {line}, column {column}")
    };
    // A top-level identifier: not after a dot (a field) and not a function name.
    let top_level = |start: usize, end: usize| {
        let before = code[..start].trim_end();
        let after = code[end..].trim_start();
        !before.ends_with('.') && !after.starts_with('(')
    };

    // `x in {...}` is a map literal after the keyword `in`.
    if let Some(found) = MESSAGE.find_iter(code).find(|m| IDENT.find(m.as_str()).is_some_and(|name| name.as_str() != "in")) {
        return Err(format!("{}: message literals (`Name{{...}}`) are not supported", at(found.start())));
    }

    let references = program.references();
    let bound: Vec<&str> = BOUND.captures_iter(code).filter_map(|c| c.get(1)).map(|m| m.as_str()).collect();
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| !VARIABLES.contains(v) && !bound.contains(v))
        .collect();
    unknown.sort_unstable();
    if let Some(name) = unknown.first() {
        let place = IDENT
            .find_iter(code)
            .find(|m| m.as_str() == *name && top_level(m.start(), m.end()))
            .map(|m| format!("{}: ", at(m.start())))
            .unwrap_or_default();
        return Err(format!("{place}unknown variable `{name}`: the variables are `request` and `user`"));
    }

    for found in FIELDS.captures_iter(code) {
        let (variable, field) = (&found[1], &found[2]);
        let start = found.get(0).map_or(0, |m| m.start());
        if !top_level(start, start + variable.len()) {
            continue;
        }
        let known: &[&str] = if variable == "request" { &REQUEST_FIELDS } else { &USER_FIELDS };
        if !known.contains(&field) {
            let offset = found.get(2).map_or(start, |m| m.start());
            return Err(format!("{}: `{variable}` has no field `{field}`: it has {}", at(offset), list(known)));
        }
        let (Some(sub), "request") = (found.get(3), variable) else { continue };
        let known: &[&str] = match field {
            "geo" => &GEO_FIELDS,
            "time" => &TIME_FIELDS,
            _ => continue,
        };
        if !known.contains(&sub.as_str()) {
            let name = sub.as_str();
            return Err(format!("{}: `request.{field}` has no field `{name}`: it has {}", at(sub.start()), list(known)));
        }
    }

    let mut functions = references.functions();
    functions.sort_unstable();
    for function in functions {
        if OPERATORS.contains(&function) {
            continue;
        }
        if IDENT.find(function).is_none_or(|m| m.as_str() != function) {
            return Err(format!("the operator `{function}` is not supported"));
        }
        if !is_function(function) {
            let place = IDENT
                .find_iter(code)
                .find(|m| m.as_str() == function && code[m.end()..].trim_start().starts_with('('))
                .map(|m| format!("{}: ", at(m.start())))
                .unwrap_or_default();
            return Err(format!("{place}unknown function `{function}`"));
        }
    }
    Ok(())
}

/// Whether the interpreter has a function of this name: a method reference
/// such as `''.size` resolves to a function value only if it does.
fn is_function(name: &str) -> bool {
    let Ok(Ok(probe)) = quietly(|| Program::compile(&format!("''.{name}"))) else {
        return false;
    };
    matches!(quietly(|| probe.execute(&ROOT)), Ok(Ok(Value::Function(..))))
}

fn list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// 1-based line and column (in characters) of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    (line, column)
}

/// The expression with string and bytes literals and comments blanked out
/// (same byte offsets), so that names can be looked for in the code alone.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut blank = |from: usize, to: usize| out[from..to.min(bytes.len())].iter_mut().for_each(|b| *b = b' ');
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p);
                blank(i, end);
                i = end;
            }
            quote @ (b'"' | b'\'') => {
                // Prefixes: r (raw), b (bytes), in either order and case.
                let prefix = bytes[..i].iter().rev().take(2).take_while(|b| b"rRbB".contains(b)).count();
                let raw = bytes[i - prefix..i].iter().any(|b| b"rR".contains(b));
                let triple = bytes[i..].starts_with(&[quote; 3]);
                let start = i - prefix;
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                    } else if triple && bytes[i..].starts_with(&[quote; 3]) {
                        i += 3;
                        break;
                    } else if !triple && (bytes[i] == quote || bytes[i] == b'\n') {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                blank(start, i);
            }
            _ => i += 1,
        }
    }
    // Only whole literals (which start and end on ASCII) were blanked.
    String::from_utf8(out).unwrap_or_default()
}

/// A CEL syntax checker that finds the first error, for the expressions
/// the parser panics on. It follows the grammar of the CEL specification.
mod syntax {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Token<'a> {
        Ident(&'a str),
        Literal,
        Punct(&'static str),
        End,
    }

    const PUNCTS: [&str; 25] = [
        "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "-", "+", "*", "/", "%", "?", ":", ".", ",", "(", ")", "[",
        "]", "{", "}", "=",
    ];

    /// The byte offset of the first syntax error and what it is, if any.
    pub(super) fn first_error(source: &str) -> Option<(usize, String)> {
        let tokens = match tokenize(source) {
            Ok(tokens) => tokens,
            Err(error) => return Some(error),
        };
        let mut parser = Parser { tokens, next: 0 };
        parser.expr().and_then(|()| parser.expect_end()).err()
    }

    fn tokenize(source: &str) -> Result<Vec<(usize, Token<'_>)>, (usize, String)> {
        let bytes = source.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let start = i;
            if c.is_ascii_whitespace() {
                i += 1;
            } else if source[i..].starts_with("//") {
                i = source[i..].find('\n').map_or(bytes.len(), |p| i + p);
            } else if let Some(prefix) = string_start(&bytes[i..]) {
                let raw = bytes[i..i + prefix].iter().any(|b| b"rR".contains(b));
                i += prefix;
                let quote = bytes[i];
                let triple = bytes[i..].starts_with(&[quote; 3]);
                i += if triple { 3 } else { 1 };
                loop {
                    if i >= bytes.len() || (!triple && bytes[i] == b'\n') {
                        return Err((start, "the string is not closed".into()));
                    }
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                    } else if triple && bytes[i..].starts_with(&[quote; 3]) {
                        i += 3;
                        break;
                    } else if !triple && bytes[i] == quote {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                tokens.push((start, Token::Literal));
            } else if c.is_ascii_alphabetic() || c == b'_' {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &source[start..i];
                let token = if matches!(word, "true" | "false" | "null") { Token::Literal } else { Token::Ident(word) };
                tokens.push((start, token));
            } else if c.is_ascii_digit() {
                i = number_end(bytes, i).map_err(|what| (start, what.to_string()))?;
                tokens.push((start, Token::Literal));
            } else if let Some(p) = PUNCTS.iter().find(|p| source[i..].starts_with(**p)) {
                if *p == "=" {
                    return Err((start, "`=` is not an operator: compare with `==`".into()));
                }
                i += p.len();
                tokens.push((start, Token::Punct(p)));
            } else {
                let ch = source[i..].chars().next().unwrap_or(' ');
                return Err((start, format!("unexpected character `{ch}`")));
            }
        }
        tokens.push((source.len(), Token::End));
        Ok(tokens)
    }

    /// Where a number starting at `i` ends: decimal or hexadecimal, with a
    /// fraction, an exponent or a `u` suffix.
    fn number_end(bytes: &[u8], mut i: usize) -> Result<usize, &'static str> {
        let digits = |from: usize, hex: bool| {
            bytes[from.min(bytes.len())..].iter().take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() }).count()
        };
        if bytes[i..].starts_with(b"0x") || bytes[i..].starts_with(b"0X") {
            let n = digits(i + 2, true);
            if n == 0 {
                return Err("a hexadecimal number needs digits");
            }
            i += 2 + n;
        } else {
            i += digits(i, false);
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1 + digits(i + 1, false);
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
                let n = digits(i + 1 + sign, false);
                if n == 0 {
                    return Err("the exponent needs digits");
                }
                i += 1 + sign + n;
            }
        }
        if matches!(bytes.get(i), Some(b'u' | b'U')) {
            i += 1;
        }
        Ok(i)
    }

    /// The length of the prefix (none, `r`, `b`, `rb`, `br`, any case) of
    /// a string literal starting here, if one does.
    fn string_start(bytes: &[u8]) -> Option<usize> {
        let prefix = bytes.iter().take(2).take_while(|b| b"rRbB".contains(b)).count();
        (0..=prefix).find(|&n| matches!(bytes.get(n), Some(b'"' | b'\'')))
    }

    struct Parser<'a> {
        tokens: Vec<(usize, Token<'a>)>,
        next: usize,
    }

    type Checked = Result<(), (usize, String)>;

    impl Parser<'_> {
        fn peek(&self) -> Token<'_> {
            self.tokens[self.next.min(self.tokens.len() - 1)].1
        }

        fn eat(&mut self, punct: &str) -> bool {
            let found = matches!(self.peek(), Token::Punct(p) if p == punct);
            if found {
                self.next += 1;
            }
            found
        }

        fn unexpected(&self, wanted: &str) -> (usize, String) {
            let (offset, token) = self.tokens[self.next.min(self.tokens.len() - 1)];
            let found = match token {
                Token::End => "the end of the expression".to_string(),
                Token::Ident(name) => format!("`{name}`"),
                Token::Literal => "a literal".to_string(),
                Token::Punct(p) => format!("`{p}`"),
            };
            (offset, format!("expected {wanted}, found {found}"))
        }

        fn expect(&mut self, punct: &str) -> Checked {
            if self.eat(punct) {
                Ok(())
            } else {
                Err(self.unexpected(&format!("`{punct}`")))
            }
        }

        fn expect_end(&self) -> Checked {
            match self.peek() {
                Token::End => Ok(()),
                _ => Err(self.unexpected("an operator or the end")),
            }
        }

        fn expr(&mut self) -> Checked {
            self.binary(0)?;
            if self.eat("?") {
                self.binary(0)?;
                self.expect(":")?;
                self.expr()?;
            }
            Ok(())
        }

        /// Binary operators by precedence, loosest first.
        fn binary(&mut self, level: usize) -> Checked {
            const LEVELS: [&[&str]; 5] =
                [&["||"], &["&&"], &["==", "!=", "<", "<=", ">", ">=", "in"], &["+", "-"], &["*", "/", "%"]];
            let Some(operators) = LEVELS.get(level) else { return self.unary() };
            self.binary(level + 1)?;
            loop {
                let found = match self.peek() {
                    Token::Punct(p) => operators.contains(&p),
                    Token::Ident("in") => operators.contains(&"in"),
                    _ => false,
                };
                if !found {
                    return Ok(());
                }
                self.next += 1;
                self.binary(level + 1)?;
            }
        }

        fn unary(&mut self) -> Checked {
            while self.eat("!") || self.eat("-") {}
            self.member()
        }

        fn member(&mut self) -> Checked {
            self.primary()?;
            loop {
                if self.eat(".") {
                    self.eat("?");
                    self.name()?;
                    if self.eat("(") {
                        self.list(")")?;
                    } else if self.eat("{") {
                        self.fields()?;
                    }
                } else if self.eat("[") {
                    self.eat("?");
                    self.expr()?;
                    self.expect("]")?;
                } else {
                    return Ok(());
                }
            }
        }

        fn name(&mut self) -> Checked {
            match self.peek() {
                Token::Ident(name) if name != "in" => {
                    self.next += 1;
                    Ok(())
                }
                _ => Err(self.unexpected("a name")),
            }
        }

        fn primary(&mut self) -> Checked {
            match self.peek() {
                Token::Literal => {
                    self.next += 1;
                    Ok(())
                }
                Token::Ident(_) | Token::Punct(".") => {
                    self.eat(".");
                    self.name()?;
                    if self.eat("(") {
                        self.list(")")?;
                    } else if self.eat("{") {
                        self.fields()?;
                    }
                    Ok(())
                }
                Token::Punct("(") => {
                    self.next += 1;
                    self.expr()?;
                    self.expect(")")
                }
                Token::Punct("[") => {
                    self.next += 1;
                    self.list("]")
                }
                Token::Punct("{") => {
                    self.next += 1;
                    self.entries()
                }
                _ => Err(self.unexpected("a value")),
            }
        }

        /// Expressions separated by commas (a trailing one allowed), then `close`.
        fn list(&mut self, close: &str) -> Checked {
            while !self.eat(close) {
                self.expr()?;
                if !self.eat(",") {
                    return self.expect(close);
                }
            }
            Ok(())
        }

        /// `key: value` entries of a map literal, then `}`.
        fn entries(&mut self) -> Checked {
            while !self.eat("}") {
                self.eat("?");
                self.expr()?;
                self.expect(":")?;
                self.expr()?;
                if !self.eat(",") {
                    return self.expect("}");
                }
            }
            Ok(())
        }

        /// `field: value` entries of a message literal, then `}`.
        fn fields(&mut self) -> Checked {
            while !self.eat("}") {
                self.eat("?");
                self.name()?;
                self.expect(":")?;
                self.expr()?;
                if !self.eat(",") {
                    return self.expect("}");
                }
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::first_error;

        #[test]
        fn finds_the_first_error() {
            let cases: &[(&str, Option<usize>)] = &[
                ("a ==", Some(4)),
                ("!", Some(1)),
                ("(", Some(1)),
                (")", Some(0)),
                (".", Some(1)),
                ("/", Some(0)),
                ("{1:", Some(3)),
                ("a ? b :", Some(7)),
                ("x in", Some(4)),
                ("'abc", Some(0)),
                ("a ==\n b &&", Some(10)),
                ("a = 1", Some(2)),
                ("a b", Some(2)),
                ("request.geo.country == \"CH\" && !(\"admins\" in user.groups)", None),
                ("[1, 2,].map(x, x * 2) == [2, 4] ? {'a': r'\\', \"b\": b'\\x00'}.size() : -1.5e3 < 0x1Fu", None),
                ("a.b.c(1)[0].?d || .x.y{f: 1} != null && '''x\n''' == \"\" // done", None),
            ];
            for (source, expected) in cases {
                let got = first_error(source);
                assert_eq!(got.as_ref().map(|(offset, _)| *offset), *expected, "{source:?}: {got:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_are_send_sync_debug_and_clone() {
        fn check<T: Send + Sync + fmt::Debug + Clone + 'static>() {}
        check::<Expression>();
    }

    #[test]
    fn code_only_blanks_literals_and_comments() {
        let source = "request.path == \"user.x\" && r'QA\\' || '''QB\n'c''' // user.y\n&& b\"\\\"QC\"";
        let code = code_only(source);
        assert_eq!(code.len(), source.len());
        assert!(code.starts_with("request.path == "));
        for hidden in ["user", "Q", "r'", "b\""] {
            assert!(!code.contains(hidden), "{hidden} in {code:?}");
        }
        assert!(code.contains("&&") && code.contains("||"));
    }

    #[test]
    fn checks_at_compile_time() {
        let cases: &[(&str, &str)] = &[
            ("request.geo.country ==", "syntax error at line 1, column"),
            ("foo == 1", "at line 1, column 1: unknown variable `foo`"),
            ("request.path == \"/\" &&\n  requst.method == \"GET\"", "at line 2, column 3: unknown variable `requst`"),
            ("request.geo.contry == \"CH\"", "at line 1, column 13: `request.geo` has no field `contry`"),
            ("request.paht == \"/\"", "`request` has no field `paht`"),
            ("user.group == []", "`user` has no field `group`"),
            ("request.time.day == 1", "`request.time` has no field `day`"),
            ("request.path.startswith(\"/\")", "at line 1, column 14: unknown function `startswith`"),
            ("nope(1)", "unknown function `nope`"),
            ("1 == 1 && Foo{a: 1} == 1", "at line 1, column 11: message literals"),
            ("request.path.exists(c, c == \"/\")", "cannot evaluate it"),
        ];
        for (source, needle) in cases {
            match Expression::compile(source) {
                Ok(_) => panic!("{source:?} was accepted"),
                Err(e) => assert!(e.contains(needle), "{source:?}: {e}"),
            }
        }
        let fine = [
            "user.groups.exists(g, g.startsWith(\"adm\")) && request.headers.all(h, h != \"\")",
            "\"foo.bar\" == request.path && size(request.query) >= 0 && request.path.matches('^/')",
            "[1, 2].map(x, x * 2).filter(y, y > 2) == [4] || has(request.geo.city)",
            "{'a': 1}['a'] == 1 && request.headers['x-env'] == 'prod' && 'a' in {'a': 1}",
            "request.time.hour >= 8 && int(request.geo.asn) > 0 && !request.geo.anonymous",
        ];
        for source in fine {
            Expression::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e}"));
        }
    }

    #[test]
    fn uses_user_follows_the_references() {
        assert!(Expression::compile("'admins' in user.groups").unwrap().uses_user());
        assert!(!Expression::compile("request.path == 'user.groups'").unwrap().uses_user());
    }
}
