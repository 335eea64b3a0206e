//! The syntax tree and the parser: precedence climbing over the FHIRPath operator table.
//!
//! Constructs outside the supported subset become [`Expr::Unsupported`] (or an `Unsupported`
//! function or operator) rather than a syntax error, so that they are reported as such.

use serde_json::Value;

use super::lex::{Tok, lex};
use super::{FhirPathError, Result};

/// Parses a whole expression.
pub(super) fn parse(source: &str) -> Result<Expr> {
    let mut parser = Parser {
        toks: lex(source)?,
        pos: 0,
    };
    let root = parser.expression(0)?;
    if *parser.peek() != Tok::End {
        return parser.error("unexpected input after the expression");
    }
    Ok(root)
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    /// `{}`
    Empty,
    Literal(Value, &'static str),
    /// `$this`
    This,
    /// `%resource` and friends: the resource being indexed.
    Resource,
    /// A constant environment variable such as `%ucum`.
    Constant(&'static str),
    /// `name` applied to the input (`None`) or to the result of another expression.
    Member(Option<Box<Expr>>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, Function),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
    /// Parsed, but not evaluated by this subset.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Function {
    Where(Box<Expr>),
    Exists(Option<Box<Expr>>),
    Empty,
    Not,
    First,
    Last,
    Count,
    HasValue,
    Resolve,
    As(String),
    OfType(String),
    Is(String),
    Extension(Box<Expr>),
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Union,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    And,
    Or,
    Xor,
    Implies,
    /// Arithmetic, `~`, `in`, `contains`: parsed, not evaluated.
    Unsupported(&'static str),
}

/// Binding power of an infix operator token, weakest first as in the FHIRPath spec (§ 6.7).
/// `.` and `[]` bind tighter than all of them and are handled in the parse loop directly.
fn infix(tok: &Tok) -> Option<(u8, BinOpOrType)> {
    use BinOpOrType::{Op, Type};
    let op = match tok {
        Tok::Ident(w) => match w.as_str() {
            "implies" => (1, Op(BinOp::Implies)),
            "or" => (2, Op(BinOp::Or)),
            "xor" => (2, Op(BinOp::Xor)),
            "and" => (3, Op(BinOp::And)),
            "in" => (4, Op(BinOp::Unsupported("in"))),
            "contains" => (4, Op(BinOp::Unsupported("contains"))),
            "is" => (8, Type(true)),
            "as" => (8, Type(false)),
            "div" => (10, Op(BinOp::Unsupported("div"))),
            "mod" => (10, Op(BinOp::Unsupported("mod"))),
            _ => return None,
        },
        Tok::Sym(s) => match *s {
            "=" => (5, Op(BinOp::Eq)),
            "!=" => (5, Op(BinOp::Ne)),
            "~" => (5, Op(BinOp::Unsupported("~"))),
            "!~" => (5, Op(BinOp::Unsupported("!~"))),
            "<" => (6, Op(BinOp::Lt)),
            ">" => (6, Op(BinOp::Gt)),
            "<=" => (6, Op(BinOp::Le)),
            ">=" => (6, Op(BinOp::Ge)),
            "|" => (7, Op(BinOp::Union)),
            "+" => (9, Op(BinOp::Unsupported("+"))),
            "-" => (9, Op(BinOp::Unsupported("-"))),
            "&" => (9, Op(BinOp::Unsupported("&"))),
            "*" => (10, Op(BinOp::Unsupported("*"))),
            "/" => (10, Op(BinOp::Unsupported("/"))),
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

enum BinOpOrType {
    Op(BinOp),
    /// `is` (true) or `as` (false), whose right side is a type name.
    Type(bool),
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::End, |(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(0, |(_, o)| *o)
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        self.pos += 1;
        tok
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(FhirPathError::Parse {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn expect(&mut self, sym: &'static str) -> Result<()> {
        if *self.peek() == Tok::Sym(sym) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(format!("expected `{sym}`"))
        }
    }

    fn expression(&mut self, min_bp: u8) -> Result<Expr> {
        let mut lhs = self.term()?;
        loop {
            let tok = self.peek().clone();
            if tok == Tok::Sym(".") {
                self.pos += 1;
                let name = self.name()?;
                lhs = self.member_or_call(Some(lhs), name)?;
                continue;
            }
            if tok == Tok::Sym("[") {
                self.pos += 1;
                let index = self.expression(0)?;
                self.expect("]")?;
                lhs = Expr::Index(Box::new(lhs), Box::new(index));
                continue;
            }
            let Some((bp, op)) = infix(&tok) else { break };
            if bp < min_bp {
                break;
            }
            self.pos += 1;
            lhs = match op {
                BinOpOrType::Op(op) => {
                    let rhs = self.expression(bp + 1)?;
                    Expr::Binary(op, Box::new(lhs), Box::new(rhs))
                }
                BinOpOrType::Type(is) => {
                    let t = self.type_specifier()?;
                    if is {
                        Expr::Is(Box::new(lhs), t)
                    } else {
                        Expr::As(Box::new(lhs), t)
                    }
                }
            };
        }
        Ok(lhs)
    }

    /// An identifier after `.` (keywords allowed: `.as(Quantity)`, `.not()`).
    fn name(&mut self) -> Result<String> {
        match self.next() {
            Tok::Ident(n) | Tok::Quoted(n) => Ok(n),
            _ => {
                self.pos -= 1;
                self.error("expected a name")
            }
        }
    }

    /// `Quantity`, `FHIR.Quantity` or `System.String`.
    fn type_specifier(&mut self) -> Result<String> {
        let first = self.name()?;
        if (first == "FHIR" || first == "System") && *self.peek() == Tok::Sym(".") {
            self.pos += 1;
            return Ok(format!("{first}.{}", self.name()?));
        }
        Ok(first)
    }

    fn term(&mut self) -> Result<Expr> {
        let offset = self.offset();
        match self.next() {
            Tok::Ident(w) if w == "true" || w == "false" => {
                Ok(Expr::Literal(Value::Bool(w == "true"), "boolean"))
            }
            Tok::Ident(n) | Tok::Quoted(n) => self.member_or_call(None, n),
            Tok::Str(s) => Ok(Expr::Literal(Value::String(s), "string")),
            Tok::Num(n) => {
                // A quantity literal (`4 'mg'`, `3 days`) is beyond this subset.
                if matches!(self.peek(), Tok::Str(_)) {
                    self.pos += 1;
                    return Ok(Expr::Unsupported(format!("quantity literal {n}")));
                }
                let number: Value = serde_json::from_str(&n).map_err(|_| FhirPathError::Parse {
                    offset,
                    message: "bad number".into(),
                })?;
                Ok(Expr::Literal(
                    number,
                    if n.contains('.') {
                        "decimal"
                    } else {
                        "integer"
                    },
                ))
            }
            Tok::DateTime(d) => Ok(Expr::Literal(
                Value::String(d.clone()),
                if d.starts_with('T') {
                    "time"
                } else {
                    "dateTime"
                },
            )),
            Tok::Var(v) => Ok(match v.as_str() {
                "resource" | "rootResource" | "context" => Expr::Resource,
                "ucum" => Expr::Constant("http://unitsofmeasure.org"),
                "sct" => Expr::Constant("http://snomed.info/sct"),
                "loinc" => Expr::Constant("http://loinc.org"),
                _ => Expr::Unsupported(format!("%{v}")),
            }),
            Tok::Dollar(d) if d == "this" => Ok(Expr::This),
            Tok::Dollar(d) => Ok(Expr::Unsupported(format!("${d}"))),
            Tok::Sym("(") => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Sym("{") => {
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Tok::Sym(s @ ("-" | "+")) => {
                let _operand = self.expression(11)?;
                Ok(Expr::Unsupported(format!("unary {s}")))
            }
            _ => {
                self.pos -= 1;
                self.error("expected an expression")
            }
        }
    }

    fn member_or_call(&mut self, target: Option<Expr>, name: String) -> Result<Expr> {
        let target = target.map(Box::new);
        if *self.peek() != Tok::Sym("(") {
            return Ok(Expr::Member(target, name));
        }
        self.pos += 1;
        let mut args = Vec::new();
        if *self.peek() != Tok::Sym(")") {
            loop {
                args.push(self.expression(0)?);
                if *self.peek() == Tok::Sym(",") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        let function = self.function(&name, args)?;
        Ok(Expr::Call(target, function))
    }

    fn function(&self, name: &str, mut args: Vec<Expr>) -> Result<Function> {
        let arity = args.len();
        let mut one = || args.pop().map(Box::new);
        let f = match (name, arity) {
            ("where", 1) => Function::Where(one().ok_or_else(|| self.arity(name))?),
            ("exists", 0 | 1) => Function::Exists(one()),
            ("empty", 0) => Function::Empty,
            ("not", 0) => Function::Not,
            ("first", 0) => Function::First,
            ("last", 0) => Function::Last,
            ("count", 0) => Function::Count,
            ("hasValue", 0) => Function::HasValue,
            ("resolve", 0) => Function::Resolve,
            ("extension", 1) => Function::Extension(one().ok_or_else(|| self.arity(name))?),
            ("as" | "ofType" | "is", 1) => {
                let t = type_name_of(&args[0]).ok_or_else(|| FhirPathError::Parse {
                    offset: self.offset(),
                    message: format!("{name}() wants a type name"),
                })?;
                match name {
                    "as" => Function::As(t),
                    "ofType" => Function::OfType(t),
                    _ => Function::Is(t),
                }
            }
            (
                "where" | "exists" | "empty" | "not" | "first" | "last" | "count" | "hasValue"
                | "resolve" | "extension" | "as" | "ofType" | "is",
                _,
            ) => return Err(self.arity(name)),
            _ => Function::Unsupported(format!("{name}()")),
        };
        Ok(f)
    }

    fn arity(&self, name: &str) -> FhirPathError {
        FhirPathError::Parse {
            offset: self.offset(),
            message: format!("wrong number of arguments for {name}()"),
        }
    }
}

/// The type named by a function argument such as `as(Quantity)` or `ofType(FHIR.Quantity)`.
fn type_name_of(arg: &Expr) -> Option<String> {
    match arg {
        Expr::Member(None, name) => Some(name.clone()),
        Expr::Member(Some(ns), name) => match &**ns {
            Expr::Member(None, ns) if ns == "FHIR" || ns == "System" => {
                Some(format!("{ns}.{name}"))
            }
            _ => None,
        },
        _ => None,
    }
}
