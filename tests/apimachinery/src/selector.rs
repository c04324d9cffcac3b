//! Label and field selectors, as `k8s.io/apimachinery/pkg/labels` and `pkg/fields` parse and match
//! them, plus the per-resource selectable fields kube-apiserver supports (`?fieldSelector=`).
//!
//! Parse errors carry upstream's message text: kube-apiserver returns them as the `message` of a
//! 400 `BadRequest` Status and kubectl prints them verbatim.

use crate::validation::{FieldError, aggregate_message, is_qualified_name, is_valid_label_value};
use serde_json::Value;
use std::fmt;

/// A selector that could not be parsed, or a field selector naming a field the resource does not
/// support. `Display` is upstream's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectorError {
    /// Label selector syntax or validation error (`unable to parse requirement: ...`, `found ...`).
    #[error("{0}")]
    Label(String),
    /// Field selector syntax error (`invalid selector: '...'; can't understand '...'`).
    #[error("{0}")]
    Field(String),
    /// Field selector names a field a resource with its own field list (pods, nodes, events,
    /// namespaces, secrets, services) cannot be selected by.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    /// Field selector names a field other than `metadata.name`/`metadata.namespace` for a resource
    /// using upstream's default field set.
    #[error("\"{0}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")]
    UnknownField(String),
}

/// Operator of one label requirement (upstream `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key op values` term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated, as upstream's `sets.String.List()`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Upstream `NewRequirement`: validates key, operator arity and values.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errs: Vec<FieldError> = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(FieldError::invalid("key", key, key_errs.join("; ")));
        }
        let vals_json = || Value::from(values.clone());
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(FieldError::invalid(
                "values",
                vals_json(),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => errs
                .push(FieldError::invalid(
                    "values",
                    vals_json(),
                    "exact-match compatibility requires one single value",
                )),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(FieldError::invalid(
                    "values",
                    vals_json(),
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        "values",
                        vals_json(),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            format!("values[{i}]"),
                            v.as_str(),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let verrs = is_valid_label_value(v);
            if !verrs.is_empty() {
                errs.push(FieldError::invalid(
                    format!("values[{i}][{key}]"),
                    v.as_str(),
                    verrs.join("; "),
                ));
            }
        }
        if errs.is_empty() {
            Ok(Self {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(SelectorError::Label(aggregate_message(&errs)))
        }
    }

    /// Upstream `Requirement.Matches`; `labels` is a JSON object of strings (or null = no labels).
    pub fn matches(&self, labels: &Value) -> bool {
        let got = labels.get(&self.key).map(|v| v.as_str().unwrap_or_default());
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => got.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !got.is_some_and(has),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(got), [want]) = (got, self.values.as_slice()) else {
                    return false;
                };
                match (got.parse::<i64>(), want.parse::<i64>()) {
                    (Ok(g), Ok(w)) => {
                        if self.operator == Operator::GreaterThan {
                            g > w
                        } else {
                            g < w
                        }
                    }
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: the AND of its requirements. `nothing` selectors (from a null
/// `metav1.LabelSelector`) match no object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Sorted by key, as upstream.
    pub requirements: Vec<Requirement>,
    nothing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Error(String),
    End,
    ClosedPar,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    Gt,
    Ident(String),
    In,
    Lt,
    NotEquals,
    NotIn,
    OpenPar,
}

impl Tok {
    fn literal(&self) -> &str {
        match self {
            Tok::Error(s) | Tok::Ident(s) => s,
            Tok::End => "",
            Tok::ClosedPar => ")",
            Tok::Comma => ",",
            Tok::Not => "!",
            Tok::DoubleEquals => "==",
            Tok::Equals => "=",
            Tok::Gt => ">",
            Tok::In => "in",
            Tok::Lt => "<",
            Tok::NotEquals => "!=",
            Tok::NotIn => "notin",
            Tok::OpenPar => "(",
        }
    }
    /// In the "values" context `in`/`notin` are plain identifiers (`x in (in)`).
    fn as_value(&self) -> Tok {
        match self {
            Tok::In | Tok::NotIn => Tok::Ident(self.literal().to_string()),
            t => t.clone(),
        }
    }
}

fn symbol_token(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::Not,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::Gt,
        "<" => Tok::Lt,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Upstream's lexer: identifiers are maximal runs of non-special, non-blank bytes; symbols are the
/// longest known operator prefix.
fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_ws(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push(Tok::End);
            return out;
        }
        if is_special(b[pos]) {
            let mut buf = String::new();
            let mut last: Option<Tok> = None;
            while pos < b.len() && is_special(b[pos]) {
                buf.push(b[pos] as char);
                if let Some(t) = symbol_token(&buf) {
                    last = Some(t);
                    pos += 1;
                } else if last.is_some() {
                    break;
                } else {
                    pos += 1;
                }
            }
            out.push(last.unwrap_or_else(|| Tok::Error(format!("error expected: keyword found '{buf}'"))));
        } else {
            let start = pos;
            while pos < b.len() && !is_special(b[pos]) && !is_ws(b[pos]) {
                pos += 1;
            }
            let word = String::from_utf8_lossy(&b[start..pos]).into_owned();
            out.push(match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident(word),
            });
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self, values: bool) -> Tok {
        let t = self.toks.get(self.pos).cloned().unwrap_or(Tok::End);
        if values { t.as_value() } else { t }
    }
    fn next(&mut self, values: bool) -> Tok {
        let t = self.peek(values);
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let t = self.peek(true);
            match t {
                Tok::Ident(_) | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let t = self.next(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let t2 = self.peek(true);
                            if !matches!(t2, Tok::Ident(_) | Tok::Not) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t2.literal()
                                ));
                            }
                        }
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut t = self.next(true);
        let mut negated = false;
        if t == Tok::Not {
            negated = true;
            t = self.next(true);
        }
        let Tok::Ident(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.literal()));
        };
        let key_errs = is_qualified_name(&key);
        if !key_errs.is_empty() {
            // Upstream validates with a nil field path, which renders as "<nil>".
            return Err(FieldError::invalid("<nil>", key.as_str(), key_errs.join("; ")).to_string());
        }
        if negated || matches!(self.peek(true), Tok::End | Tok::Comma) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.to_string());
        }
        let op = match self.next(false) {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ));
            }
        };
        let mut values = match op {
            Operator::In | Operator::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        values.sort();
        values.dedup();
        Requirement::new(&key, op, values).map_err(|e| e.to_string())
    }

    fn set_values(&mut self) -> Result<Vec<String>, String> {
        let t = self.next(true);
        if t != Tok::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let t = self.peek(true);
        match t {
            Tok::Ident(_) | Tok::Comma => {
                let s = self.identifiers()?;
                if self.next(true) != Tok::ClosedPar {
                    return Err(format!("found '{}', expected: ')'", t.literal()));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.next(true);
                Ok(vec![String::new()])
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            match self.next(true) {
                Tok::Ident(v) => {
                    s.push(v);
                    match self.peek(true) {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        other => {
                            return Err(format!("found '{}', expected: ',' or ')'", other.literal()));
                        }
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    match self.peek(true) {
                        Tok::ClosedPar => {
                            s.push(String::new());
                            return Ok(s);
                        }
                        Tok::Comma => {
                            self.next(true);
                            s.push(String::new());
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ));
                }
            }
        }
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(true), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next(true) {
            Tok::Ident(v) => Ok(vec![v]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

impl LabelSelector {
    /// A selector matching every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector matching no object (upstream `labels.Nothing()`).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parse the query-string syntax of `?labelSelector=` (`a=b,c!=d,e in (x,y),!f,g`).
    /// The empty string matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { toks: lex(s), pos: 0 };
        let mut requirements = p.parse().map_err(SelectorError::Label)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Convert a `metav1.LabelSelector` (`{matchLabels, matchExpressions}`) as upstream's
    /// `LabelSelectorAsSelector`: JSON `null` (an absent selector) matches **nothing**; `{}` (present
    /// but empty) matches **everything**.
    pub fn from_json(sel: &Value) -> Result<Self, SelectorError> {
        let obj = match sel {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            other => {
                return Err(SelectorError::Label(format!(
                    "label selector must be an object, got {other}"
                )));
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| SelectorError::Label(format!("matchLabels[{k}] must be a string")))?;
                    requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
                }
            }
            Some(_) => return Err(SelectorError::Label("matchLabels must be an object".to_string())),
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for e in exprs {
                    let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                    let op_s = e.get("operator").and_then(Value::as_str).unwrap_or_default();
                    let op = match op_s {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        other => {
                            return Err(SelectorError::Label(format!(
                                "{} is not a valid label selector operator",
                                Value::String(other.to_string())
                            )));
                        }
                    };
                    let mut values: Vec<String> = e
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    values.sort();
                    values.dedup();
                    requirements.push(Requirement::new(key, op, values)?);
                }
            }
            Some(_) => {
                return Err(SelectorError::Label(
                    "matchExpressions must be an array".to_string(),
                ));
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// A Service-style `map[string]string` selector (`spec.selector`): every pair must match.
    /// Null or `{}` gives a selector matching everything (upstream `SelectorFromSet`); callers that,
    /// like the endpoints controller, skip selector-less Services must check that themselves.
    pub fn from_map(map: &Value) -> Self {
        let mut requirements: Vec<Requirement> = map
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Requirement {
                        key: k.clone(),
                        operator: Operator::Equals,
                        values: vec![v.as_str().unwrap_or_default().to_string()],
                    })
                    .collect()
            })
            .unwrap_or_default();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` (a JSON object of strings, or null) match.
    pub fn matches(&self, labels: &Value) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// One `field op value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector (`?fieldSelector=`): the AND of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// Sorted as upstream sorts the raw terms.
    pub requirements: Vec<FieldRequirement>,
}

/// Split on unescaped commas (upstream `splitTerms`).
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

/// Find the first unescaped operator (`!=`, `==`, `=`) (upstream `splitTerm`).
fn split_term(term: &str) -> Option<(String, bool, String)> {
    let b = term.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        // Bytes, not `term[i..]`: `i` may sit inside a multi-byte character (a panic on
        // `spec.nodeName!Ç2`). The operators are ASCII, so where one matches `i` is a char boundary.
        for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
            if b[i..].starts_with(op.as_bytes()) {
                return Some((term[..i].to_string(), neg, term[i + op.len()..].to_string()));
            }
        }
        i += 1;
    }
    None
}

/// Upstream `fields.EscapeValue`, the inverse of [`unescape_value`]: a shown selector must parse
/// back to itself (a value `a,b` shown bare would read as two terms).
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`: `\\`, `\,`, `\=` are the only escapes; bare `,`/`=` are errors.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => {
                    return Err(SelectorError::Field(format!(
                        "invalid field selector: invalid escape sequence: \\{n}"
                    )));
                }
                None => {
                    return Err(SelectorError::Field(
                        "invalid field selector: invalid escape sequence: \\".to_string(),
                    ));
                }
            },
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parse `a=b,c!=d,e==f`; the empty string matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, negated, rhs)) = split_term(&part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            requirements.push(FieldRequirement {
                field,
                negated,
                value: unescape_value(&rhs)?,
            });
        }
        Ok(Self { requirements })
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Check every field is selectable for `resource` (plural, lower-case: `pods`, `events`, ...).
    /// kube-apiserver rejects the request with this error before listing.
    pub fn validate(&self, resource: &str) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if !supported_fields(resource).contains(&r.field.as_str()) {
                return Err(if has_own_field_list(resource) {
                    SelectorError::UnsupportedField(r.field.clone())
                } else {
                    SelectorError::UnknownField(r.field.clone())
                });
            }
        }
        Ok(())
    }

    /// Whether `obj` (a full object of `resource`) matches. Errors for fields `resource` does not
    /// support, with upstream's `field label not supported: X`.
    pub fn matches(&self, obj: &Value, resource: &str) -> Result<bool, SelectorError> {
        self.validate(resource)?;
        Ok(self.requirements.iter().all(|r| {
            let got = field_value(obj, resource, &r.field).unwrap_or_default();
            (got == r.value) != r.negated
        }))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| {
                let op = if r.negated { "!=" } else { "=" };
                format!("{}{op}{}", r.field, escape_value(&r.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

// Upstream's field label conversion functions (pkg/apis/core/v1/conversion.go); resources
// without one use `DefaultMetaV1FieldSelectorConversion` (name and namespace only).
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    // Old v1 clients' name for spec.nodeName.
    "spec.host",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const SECRET_FIELDS: &[&str] = &["type", "metadata.namespace", "metadata.name"];
const SERVICE_FIELDS: &[&str] = &[
    "metadata.namespace",
    "metadata.name",
    "spec.clusterIP",
    "spec.type",
];
// Cluster-scoped kinds with their own list have no metadata.namespace.
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["status.phase", "metadata.name"];
const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

fn has_own_field_list(resource: &str) -> bool {
    matches!(
        resource,
        "pods" | "events" | "secrets" | "services" | "nodes" | "namespaces"
    )
}

/// The field labels kube-apiserver lets clients select `resource` by.
pub fn supported_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => POD_FIELDS,
        "events" => EVENT_FIELDS,
        "secrets" => SECRET_FIELDS,
        "services" => SERVICE_FIELDS,
        "nodes" => NODE_FIELDS,
        "namespaces" => NAMESPACE_FIELDS,
        _ => META_FIELDS,
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut v = obj;
    for p in path {
        match v.get(p) {
            Some(n) => v = n,
            None => return "",
        }
    }
    v.as_str().unwrap_or_default()
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    let mut v = obj;
    for p in path {
        match v.get(p) {
            Some(n) => v = n,
            None => return "false".to_string(),
        }
    }
    v.as_bool().unwrap_or(false).to_string()
}

/// The string value kube-apiserver's `ToSelectableFields` gives `field` of `obj`, or `None` if the
/// field is not selectable for `resource`. Booleans render as `true`/`false`; absent values as `""`.
pub fn field_value(obj: &Value, resource: &str, field: &str) -> Option<String> {
    if !supported_fields(resource).contains(&field) {
        return None;
    }
    let v = match (resource, field) {
        (_, "metadata.name") => str_at(obj, &["metadata", "name"]).to_string(),
        (_, "metadata.namespace") => str_at(obj, &["metadata", "namespace"]).to_string(),
        ("pods", "spec.host") => str_at(obj, &["spec", "nodeName"]).to_string(),
        ("pods", "spec.hostNetwork") => bool_at(obj, &["spec", "hostNetwork"]),
        // Upstream: the first of status.podIPs (status.podIP is not consulted).
        ("pods", "status.podIP") => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        // Accepted by the conversion but absent from the selectable set: always "".
        ("pods", "status.podIPs") => String::new(),
        ("nodes", "spec.unschedulable") => bool_at(obj, &["spec", "unschedulable"]),
        ("events", "source") => {
            // core/v1 source.component (events.k8s.io: deprecatedSource), else reportingController.
            let mut c = str_at(obj, &["source", "component"]);
            if c.is_empty() {
                c = str_at(obj, &["deprecatedSource", "component"]);
            }
            if c.is_empty() {
                c = str_at(obj, &["reportingController"]);
            }
            c.to_string()
        }
        ("events", "reportingComponent") => str_at(obj, &["reportingController"]).to_string(),
        ("events", f) if f.starts_with("involvedObject.") => {
            let sub = &f["involvedObject.".len()..];
            let c = str_at(obj, &["involvedObject", sub]);
            // events.k8s.io/v1 calls it "regarding".
            if c.is_empty() {
                str_at(obj, &["regarding", sub])
            } else {
                c
            }
            .to_string()
        }
        (_, f) => {
            let parts: Vec<&str> = f.split('.').collect();
            str_at(obj, &parts).to_string()
        }
    };
    Some(v)
}

#[cfg(test)]
mod tests;
