//! The checks of an expression's syntax tree at load, and what of the
//! request it reads.

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};

use super::{is_function, CompileError, MAX_NESTING};

/// Which parts of the context an expression reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reads {
    pub method: bool,
    pub path: bool,
    pub query: bool,
    pub headers: bool,
    pub ip: bool,
    pub geo: bool,
    /// Which fields of `request.geo`, as bits in the order of [`GEO_FIELDS`].
    pub geo_fields: u16,
    pub time: bool,
    pub user: bool,
}

impl Reads {
    fn request_field(&mut self, name: &str) {
        let read = match name {
            "method" => &mut self.method,
            "path" => &mut self.path,
            "query" => &mut self.query,
            "headers" => &mut self.headers,
            "ip" => &mut self.ip,
            "geo" => &mut self.geo,
            "time" => &mut self.time,
            _ => return,
        };
        *read = true;
    }

    fn whole_request(&mut self) {
        if let Shape::Record(fields) = REQUEST {
            fields.iter().for_each(|(name, _)| self.request_field(name));
        }
        self.whole_geo();
    }

    fn geo_field(&mut self, name: &str) {
        if let Some(index) = GEO_FIELDS.iter().position(|(field, _)| *field == name) {
            self.geo_fields |= 1 << index;
        }
    }

    fn whole_geo(&mut self) {
        self.geo_fields = (1 << GEO_FIELDS.len()) - 1;
    }

    /// The names of the `request.geo` fields read.
    pub fn geo_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        GEO_FIELDS.iter().enumerate().filter(|(index, _)| self.geo_fields & (1 << index) != 0).map(|(_, (name, _))| *name)
    }
}

/// What a variable or a field holds, as far as the checks need to know.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// Fixed fields: any other name is a typo.
    Record(&'static [(&'static str, Shape)]),
    /// Strings by keys the client chooses (query parameters, headers).
    Map,
    List,
    Scalar(&'static str),
}

const STRING: Shape = Shape::Scalar("string");
const INT: Shape = Shape::Scalar("int");
const BOOL: Shape = Shape::Scalar("bool");
const GEO_FIELDS: &[(&str, Shape)] = &[
    ("country", STRING),
    ("continent", STRING),
    ("city", STRING),
    ("asn", INT),
    ("isp", STRING),
    ("organization", STRING),
    ("connection_type", STRING),
    ("user_type", STRING),
    ("domain", STRING),
    ("anonymous", BOOL),
];
const GEO: Shape = Shape::Record(GEO_FIELDS);
const TIME: Shape = Shape::Record(&[("hour", INT), ("minute", INT), ("weekday", INT)]);
pub(super) const REQUEST: Shape = Shape::Record(&[
    ("method", STRING),
    ("path", STRING),
    ("query", Shape::Map),
    ("headers", Shape::Map),
    ("ip", STRING),
    ("geo", GEO),
    ("time", TIME),
]);
pub(super) const USER: Shape = Shape::Record(&[("name", STRING), ("groups", Shape::List), ("second_factor_age", INT)]);

fn variable(name: &str) -> Option<Shape> {
    match name {
        "request" => Some(REQUEST),
        "user" => Some(USER),
        _ => None,
    }
}

/// The operators (as the parser names them) the interpreter evaluates.
const OPERATORS: [&str; 19] = [
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::NEGATE,
    operators::SUBSTRACT,
    operators::ADD,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::GREATER_EQUALS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::LESS,
    operators::INDEX,
    operators::IN,
    operators::NOT_STRICTLY_FALSE,
];

/// The macros that bind a variable, for a clearer error when one is
/// called without one.
const BINDING_MACROS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// Checks the tree and finds what it reads. `places` locates its nodes in
/// `source`.
pub(super) fn check(tree: &IdedExpr, places: &SourceInfo, source: &str) -> Result<Reads, CompileError> {
    let mut walk = Walk { places, source, bound: Vec::new(), reads: Reads::default() };
    walk.expr(tree, 1)?;
    Ok(walk.reads)
}

/// A variable and the fields or constant keys selected on it, as in
/// `request.geo.country` or `request["geo"]["country"]`.
struct Path<'t> {
    variable: &'t str,
    /// What the variable holds.
    shape: Shape,
    id: u64,
    steps: Vec<Step<'t>>,
}

struct Step<'t> {
    name: &'t str,
    id: u64,
    /// `["name"]` rather than `.name`.
    key: bool,
}

impl Path<'_> {
    /// The path as written with its first `steps` steps.
    fn shown(&self, steps: usize) -> String {
        let mut shown = self.variable.to_string();
        for step in &self.steps[..steps] {
            if step.key {
                shown.push_str(&format!("[{:?}]", step.name));
            } else {
                shown.push_str(&format!(".{}", step.name));
            }
        }
        shown
    }
}

struct Walk<'t> {
    places: &'t SourceInfo,
    source: &'t str,
    /// Names bound by the enclosing macros.
    bound: Vec<&'t str>,
    reads: Reads,
}

impl<'t> Walk<'t> {
    fn expr(&mut self, expr: &'t IdedExpr, depth: u16) -> Result<(), CompileError> {
        if depth > MAX_NESTING {
            return Err(self.error(expr.id, format!("it nests more than {MAX_NESTING} levels deep")));
        }
        if let Some(path) = self.path_of(expr) {
            return self.path(&path).map(drop);
        }
        let deeper = depth + 1;
        match &expr.expr {
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => self.ident(expr.id, name),
            Expr::Select(select) => self.expr(&select.operand, deeper),
            Expr::Call(call) => self.call(expr.id, call, deeper),
            Expr::Comprehension(comprehension) => self.comprehension(comprehension, deeper),
            Expr::List(list) => list.elements.iter().try_for_each(|element| self.expr(element, deeper)),
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => {
                    self.expr(&entry.key, deeper)?;
                    self.expr(&entry.value, deeper)
                }
                // The interpreter panics on these; the parser makes none.
                EntryExpr::StructField(_) => Err(self.error(entry.id, "a field entry in a map literal")),
            }),
            Expr::Struct(message) => {
                Err(self.error_at_name(expr.id, &message.type_name, "message literals (`Name{...}`) are not supported"))
            }
            // The interpreter panics on these; the parser makes none.
            Expr::Unspecified => Err(self.error(expr.id, "an incomplete expression")),
        }
    }

    /// A name that is not `request` or `user`: one bound by a macro.
    fn ident(&self, id: u64, name: &str) -> Result<(), CompileError> {
        if self.bound.contains(&name) {
            return Ok(());
        }
        Err(self.error(id, format!("unknown variable `{name}`: the variables are `request` and `user`")))
    }

    fn call(&mut self, id: u64, call: &'t CallExpr, depth: u16) -> Result<(), CompileError> {
        let name = call.func_name.as_str();
        if !OPERATORS.contains(&name) && !is_function(name) {
            let what = if BINDING_MACROS.contains(&name) {
                format!("`{name}` takes a variable and an expression, as in `user.groups.{name}(g, g == \"admins\")`")
            } else if name.starts_with(['_', '@']) {
                format!("the operator `{name}` is not supported")
            } else {
                format!("unknown function `{name}`")
            };
            return Err(self.error_at_name(id, name, what));
        }
        if let Some(target) = &call.target {
            self.expr(target, depth)?;
        }
        call.args.iter().try_for_each(|arg| self.expr(arg, depth))
    }

    /// A macro such as `exists`: its range, then its steps with the names
    /// it binds.
    fn comprehension(&mut self, comprehension: &'t ComprehensionExpr, depth: u16) -> Result<(), CompileError> {
        let range = &comprehension.iter_range;
        match self.path_of(range) {
            Some(path) => {
                if let Shape::Scalar(kind) = self.path(&path)? {
                    let shown = path.shown(path.steps.len());
                    let what = format!("`{shown}` is a {kind}: macros such as `exists` and `all` go over a list or a map");
                    return Err(self.error(path.id, what));
                }
            }
            None => self.expr(range, depth)?,
        }
        self.expr(&comprehension.accu_init, depth)?;
        let outer = self.bound.len();
        self.bound.push(&comprehension.iter_var);
        self.bound.extend(comprehension.iter_var2.as_deref());
        self.bound.push(&comprehension.accu_var);
        let steps = [&comprehension.loop_cond, &comprehension.loop_step, &comprehension.result];
        let checked = steps.into_iter().try_for_each(|step| self.expr(step, depth));
        self.bound.truncate(outer);
        checked
    }

    /// The variable and the fields selected on it, if `expr` is one.
    fn path_of(&self, expr: &'t IdedExpr) -> Option<Path<'t>> {
        let mut steps = Vec::new();
        let mut node = expr;
        loop {
            match &node.expr {
                Expr::Select(select) => {
                    steps.push(Step { name: &select.field, id: node.id, key: false });
                    node = &select.operand;
                }
                Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
                    let [operand, key] = call.args.as_slice() else { return None };
                    let Expr::Literal(LiteralValue::String(name)) = &key.expr else { return None };
                    steps.push(Step { name: name.inner(), id: key.id, key: true });
                    node = operand;
                }
                Expr::Ident(name) if !self.bound.contains(&name.as_str()) => {
                    let shape = variable(name)?;
                    steps.reverse();
                    return Some(Path { variable: name, shape, id: node.id, steps });
                }
                _ => return None,
            }
        }
    }

    /// Checks the fields of a path, notes what it reads and returns what it
    /// holds.
    fn path(&mut self, path: &Path<'t>) -> Result<Shape, CompileError> {
        match (path.variable, path.steps.first()) {
            ("user", _) => self.reads.user = true,
            (_, Some(field)) => {
                self.reads.request_field(field.name);
                if field.name == "geo" {
                    match path.steps.get(1) {
                        Some(geo_field) => self.reads.geo_field(geo_field.name),
                        None => self.reads.whole_geo(),
                    }
                }
            }
            (_, None) => self.reads.whole_request(),
        }
        let mut shape = path.shape;
        for (index, step) in path.steps.iter().enumerate() {
            shape = match shape {
                Shape::Record(fields) => match fields.iter().find(|(name, _)| *name == step.name) {
                    Some((_, field)) => *field,
                    None => {
                        let names = fields.iter().map(|(name, _)| format!("`{name}`")).collect::<Vec<_>>().join(", ");
                        let what = format!("`{}` has no field `{}`: it has {names}", path.shown(index), step.name);
                        return Err(self.error_at_step(step, what));
                    }
                },
                Shape::Map => STRING,
                Shape::List => return Err(self.error_at_step(step, format!("`{}` is a list: it has no fields", path.shown(index)))),
                Shape::Scalar(kind) => {
                    return Err(self.error_at_step(step, format!("`{}` is a {kind}: it has no fields", path.shown(index))))
                }
            };
        }
        Ok(shape)
    }

    /// Where the parser placed a node: the start of a name or a literal; the
    /// `.` of a field; the `(` of a call; the `{` of a message literal.
    fn place(&self, id: u64) -> Option<usize> {
        self.places.offset_for(id).map(|(start, _)| start as usize)
    }

    fn error(&self, id: u64, what: impl std::fmt::Display) -> CompileError {
        match self.place(id) {
            Some(offset) => CompileError::at(self.source, offset, what),
            None => CompileError::new(what.to_string()),
        }
    }

    /// An error at `name`, written just before the node's place, as a
    /// function's name before its `(`.
    fn error_at_name(&self, id: u64, name: &str, what: impl std::fmt::Display) -> CompileError {
        let Some(offset) = self.place(id) else { return self.error(id, what) };
        let before = self.source.get(..offset).unwrap_or_default().trim_end();
        let start = if before.ends_with(name) { before.len() - name.len() } else { offset };
        CompileError::at(self.source, start, what)
    }

    /// An error at a step's name: a key's literal, or a field's name after
    /// its `.`.
    fn error_at_step(&self, step: &Step, what: String) -> CompileError {
        let Some(offset) = self.place(step.id) else { return self.error(step.id, what) };
        let after = self.source.get(offset..).unwrap_or_default();
        let start = match (step.key, after.find(step.name)) {
            (false, Some(distance)) => offset + distance,
            _ => offset,
        };
        CompileError::at(self.source, start, what)
    }
}
