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
//! | `request.geo.isp` | string | the ISP's name; `""` when unknown |
//! | `request.geo.organization` | string | the organisation's name; `""` when unknown |
//! | `request.geo.connection_type` | string | `Cable/DSL`, `Cellular`, `Corporate`, `Dialup`, `Satellite`; `""` when unknown |
//! | `request.geo.user_type` | string | `business`, `residential`, `hosting`, ...; `""` when unknown |
//! | `request.geo.domain` | string | second-level domain, e.g. `example.com`; `""` when unknown |
//! | `request.geo.anonymous` | bool | any Anonymous-IP flag (VPN, Tor, hosting, proxies) |
//! | `request.time.hour` | int | 0-23, in `[policy] time_zone` |
//! | `request.time.minute` | int | 0-59, likewise |
//! | `request.time.weekday` | int | 0 = Sunday ... 6 = Saturday, as CEL's `getDayOfWeek` |
//! | `user.name` | string | the user name |
//! | `user.groups` | list of strings | the user's groups |
//! | `user.second_factor_age` | int | seconds since the session's last second factor; `-1` when none |
//!
//! Checked at load, on the syntax tree ([`check`]): the syntax (errors give
//! the line and column inside the expression), variables other than
//! `request` and `user` (names bound by macros such as `exists(g, ...)` are
//! allowed), the fields of `request`, `request.geo`, `request.time` and
//! `user`, written with dots or as constant keys (`request["geo"]["city"]`),
//! functions the interpreter does not have, message literals (`Name{...}`),
//! which it cannot evaluate, and macros such as `exists` over a field that is
//! neither a list nor a map. The keys of `request.query` and
//! `request.headers` are the client's to choose: a missing one is an error
//! when evaluating (`"x-env" in request.headers` tests for it first).
//!
//! Limits: an expression is at most [`MAX_LENGTH`] bytes and nests at most
//! [`MAX_NESTING`] levels (calls, operators, fields, lists). The `cel`
//! parser and interpreter recurse once a level, and a stack overflow aborts
//! the process, which no panic handler can catch. So expressions are parsed
//! on a thread of their own with a large stack ([`PARSER_STACK`]), and
//! evaluation, on a request's thread, never recurses deeper than the limit.
//!
//! Panics: the `cel` parser reports incomplete expressions (`a ==`, `!`, an
//! unterminated string) as errors with their position; the interpreter
//! panics only on tree nodes the parser does not make (an unspecified
//! expression, a field entry in a map literal), which [`check`] refuses all
//! the same. Nothing is caught around evaluation, so a panic there would be
//! a bug to fix, not a condition to hide.
//!
//! The user: an expression "uses the user" when it names the variable
//! `user`. For a visitor nobody is signed in as, `user` is left undeclared;
//! if the expression's value then still comes out (`request.geo.country ==
//! "CH" || "admins" in user.groups` from Zurich), it stands; if evaluating
//! it needs the user, the rule asks for sign-in first, like a rule with
//! `users` or `groups`.
//!
//! A result that is not a bool or an evaluation error (a missing map key, a
//! type mismatch) is a [`Failure`]; the rule's policy decides what it counts
//! as (see `conditions::verdict`).
//!
//! Only the fields of `request` the expression reads are built for a
//! request ([`values`]); one that uses `request` as a whole
//! (`size(request)`, `request[name]` with a computed name) gets them all.

mod check;
mod values;

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelBool, DYN_TYPE, LIST_TYPE, MAP_TYPE};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, ParseErrors, Value};
use regex::Regex;

use super::{Request, Subject};
use crate::config::{GeoData, PolicyConfig};
use check::Reads;

/// The longest expression accepted, in bytes.
const MAX_LENGTH: usize = 4096;

/// How deep an expression may nest. Evaluating recurses once a level, on a
/// request's thread (2 MiB of stack; a debug build spends up to 40 KiB a
/// level); real conditions stay under ten.
const MAX_NESTING: u16 = 16;

/// The stack of the thread that parses: the parser takes over 100 KiB a
/// level in a debug build, and its tree of a long chain (`1 + 1 + ...`)
/// is as deep as the chain is long until [`check`] refuses it.
const PARSER_STACK: usize = 64 << 20;

/// A compiled `when` expression and its source text. Cheap to clone.
#[derive(Clone)]
pub struct Expression {
    inner: Arc<Inner>,
}

struct Inner {
    tree: IdedExpr,
    source: String,
    reads: Reads,
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
}

/// Why an expression is refused: what is wrong, at which line and column of
/// the expression where that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    message: String,
    offset: Option<usize>,
}

impl CompileError {
    fn new(message: impl Into<String>) -> CompileError {
        CompileError { message: message.into(), offset: None }
    }

    /// An error about the byte at `offset` in `source`.
    fn at(source: &str, offset: usize, what: impl fmt::Display) -> CompileError {
        let (line, column) = position(source, offset);
        CompileError { message: format!("at line {line}, column {column}: {what}"), offset: Some(offset) }
    }

    /// The byte offset in the expression the error is about, if any.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompileError {}

/// The standard functions and macros, without the optional syntax
/// (`a.?b`), which the gateway does not document, and with `contains` on
/// lists and maps (`user.groups.contains("admins")`), which the gateway's
/// earlier CEL interpreter had.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib().with_optional_support(false);
    // No standard overload has these signatures; were one to, the call
    // would fail to evaluate, and a test says so.
    let _ = env.add_member_overload("contains", "list_contains", LIST_TYPE, vec![DYN_TYPE], contains);
    let _ = env.add_member_overload("contains", "map_contains", MAP_TYPE, vec![DYN_TYPE], contains);
    Arc::new(env)
});

/// `list.contains(x)` and `map.contains(key)`: `x in list`, `key in map`.
fn contains<'b, 'v>(arguments: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let unsupported = || {
        let types = arguments.iter().map(|argument| argument.get_type().name().to_owned()).collect();
        ExecutionError::no_such_member_overload("contains", types)
    };
    let [holder, element] = arguments.as_slice() else { return Err(unsupported()) };
    let Some(holder) = holder.as_container() else { return Err(unsupported()) };
    Ok(CowVal::owned(CelBool::from(holder.contains(element.as_ref())?)))
}

/// The root of every evaluation: the standard library, and `min` and `max`,
/// which `cel` ships outside it. Variables go in a child scope.
static ROOT: LazyLock<Context<'static, 'static>> = LazyLock::new(|| {
    let mut root = Context::with_env(Arc::clone(&ENV));
    // Neither is a standard overload, so neither conflicts with one; were
    // one to, it would be an unknown function, refused at load.
    let _ = root.add_function("max", cel::functions::max);
    let _ = root.add_function("min", cel::functions::min);
    root
});

impl Expression {
    /// Parses and checks `source`. The error says what is wrong and, where
    /// it can, at which line and column of the expression.
    pub fn compile(source: &str) -> Result<Expression, CompileError> {
        if source.len() > MAX_LENGTH {
            return Err(CompileError::new(format!("the expression is longer than {MAX_LENGTH} bytes")));
        }
        let (tree, reads) = on_parser_thread(|| parse_and_check(source))?;
        Ok(Expression { inner: Arc::new(Inner { tree, source: source.to_string(), reads }) })
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether the expression may read the query string.
    pub fn reads_query(&self) -> bool {
        self.inner.reads.query
    }

    /// Whether the expression reads `user`.
    pub fn uses_user(&self) -> bool {
        self.inner.reads.user
    }

    /// The fields of `request.geo` the expression reads, with the kind of
    /// geo data each comes from.
    pub fn geo_reads(&self) -> Vec<(GeoData, &'static str)> {
        self.inner.reads.geo_fields().map(|field| (geo_field_data(field), field)).collect()
    }

    /// Evaluates the expression for `request` and `subject`.
    pub(crate) fn evaluate(&self, request: &Request, settings: &PolicyConfig, subject: Option<&Subject>) -> Result<bool, Failure> {
        let reads = self.inner.reads;
        let mut context = scope();
        context.add_variable_as_val("request", values::request(request, settings, reads));
        if let (true, Some(subject)) = (reads.user, subject) {
            context.add_variable_as_val("user", values::user(subject, request.now));
        }
        match Value::resolve(&self.inner.tree, &context) {
            Ok(Value::Bool(value)) => Ok(value),
            Ok(other) => Err(Failure::Error(format!("the result is {}, not a bool", other.type_of()))),
            Err(ExecutionError::UndeclaredReference(name)) if subject.is_none() && name.as_str() == "user" => Err(Failure::NeedsIdentity),
            Err(error) => Err(Failure::Error(describe(&error))),
        }
    }
}

/// A child scope of [`ROOT`] for variables that borrow from one request.
fn scope<'r>() -> Context<'r, 'r> {
    let root: &'r Context<'r, 'r> = &ROOT;
    root.new_inner_scope()
}

/// Runs `parse` on a thread with a stack large enough for the parser.
fn on_parser_thread<T: Send>(parse: impl FnOnce() -> Result<T, CompileError> + Send) -> Result<T, CompileError> {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("cel-parser".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, parse)
            .map_err(|error| CompileError::new(format!("cannot start the CEL parser: {error}")))?;
        parser.join().unwrap_or_else(|_| Err(CompileError::new("the CEL parser failed on it")))
    })
}

fn parse_and_check(source: &str) -> Result<(IdedExpr, Reads), CompileError> {
    let (tree, places) =
        ENV.parser().max_recursion_depth(MAX_NESTING).parse_with_source_info(source).map_err(|errors| syntax_error(source, &errors))?;
    let reads = check::check(&tree, &places, source)?;
    Ok((tree, reads))
}

/// The first of the parser's errors. It may add vaguer ones ("Incomplete
/// `IndexContext`!") before the grammar's; those come first only if alone.
fn syntax_error(source: &str, errors: &ParseErrors) -> CompileError {
    let grammar = errors.errors.iter().find(|e| e.msg.starts_with("Syntax error"));
    let Some(first) = grammar.or(errors.errors.first()) else {
        return CompileError::new("syntax error");
    };
    let (line, column) = first.pos;
    let mut error = CompileError::at(source, offset_of(source, line, column), readable(&first.msg));
    error.message.insert_str(0, "syntax error ");
    error
}

/// The parser's message, said plainly: its expected-token lists name
/// grammar rules rather than anything a rule's author wrote.
fn readable(message: &str) -> String {
    static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)^(?:mismatched input|extraneous input|no viable alternative at input) '(.*?)'(?: expecting .*)?$")
            .expect("a constant, valid regex")
    });
    let message = message.trim().trim_start_matches("Syntax error: ");
    if message.contains("Recursion limit") {
        return format!("it nests more than {MAX_NESTING} levels deep");
    }
    if let Some(text) = message.strip_prefix("token recognition error at: '") {
        return match text.chars().next() {
            Some('=') => "`=` is not an operator: compare with `==`".into(),
            Some('\'' | '"') => "a string that is not closed, or has an invalid escape".into(),
            Some(other) => format!("unexpected character `{other}`"),
            None => "unexpected character".into(),
        };
    }
    match TOKEN.captures(message) {
        Some(found) if &found[1] == "<EOF>" => "the expression ends too early".into(),
        Some(found) => format!("unexpected `{}`", &found[1]),
        None => message.to_string(),
    }
}

/// Whether the interpreter has a function of this name, called alone or as
/// a method: called with no arguments, only a function it does not have is
/// "undeclared".
fn is_function(name: &str) -> bool {
    let call = |target: Option<IdedExpr>| IdedExpr {
        id: 1,
        expr: Expr::Call(CallExpr { func_name: name.to_string(), target: target.map(Box::new), args: Vec::new() }),
    };
    let empty_string = IdedExpr { id: 2, expr: Expr::Literal(LiteralValue::String("".into())) };
    [call(None), call(Some(empty_string))].iter().any(|probe| match Value::resolve(probe, &ROOT) {
        Err(ExecutionError::UndeclaredReference(undeclared)) => undeclared.as_str() != name,
        _ => true,
    })
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
        // The function and the types of its arguments.
        NoSuchOverload(overload) => overload.to_string(),
        UndeclaredReference(name) => format!("undeclared reference to `{name}`"),
        MissingArgumentOrTarget => "missing argument or target".into(),
        ValuesNotComparable(a, b) => format!("cannot compare {} with {}", a.type_of(), b.type_of()),
        UnsupportedBinaryOperator(op, a, b) => format!("`{op}` does not apply to {} and {}", a.type_of(), b.type_of()),
        UnsupportedIndex(value, index) => format!("a {} cannot index a {}", index.type_of(), value.type_of()),
        FunctionError { function, .. } => format!("function `{function}` failed"),
        DivisionByZero(_) => "division by zero".into(),
        RemainderByZero(_) => "remainder by zero".into(),
        Overflow(op, ..) => format!("overflow in `{op}`"),
        IndexOutOfBounds(_) => "index out of bounds".into(),
        DuplicateKey(_) => "a map literal repeats a key".into(),
        _ => "evaluation error".into(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    (line, column)
}

/// The byte offset of a 1-based line and column (in characters), as the
/// parser counts them; the end of the source past its last character.
fn offset_of(source: &str, line: isize, column: isize) -> usize {
    let skipped_lines = usize::try_from(line - 1).unwrap_or(0);
    let start = source.split_inclusive('\n').take(skipped_lines).map(str::len).sum::<usize>();
    let skipped_chars = usize::try_from(column - 1).unwrap_or(0);
    let rest = &source[start..];
    start + rest.char_indices().nth(skipped_chars).map_or(rest.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests;

/// The kind of geo data a field of `request.geo` comes from.
fn geo_field_data(field: &str) -> GeoData {
    match field {
        "asn" => GeoData::Network,
        "isp" | "organization" => GeoData::Isp,
        "connection_type" => GeoData::ConnectionType,
        "user_type" => GeoData::UserType,
        "domain" => GeoData::Domain,
        "anonymous" => GeoData::Anonymous,
        _ => GeoData::Place,
    }
}
