//! Conditions over request fields, compiled once at load.
//!
//! ```json
//! { "all": [ C, ... ] }   { "any": [ C, ... ] }   { "not": C }
//! { "field": F, "op": O, "value": "..." }  or  "values": [ "...", ... ]
//! ```
//!
//! Fields: `method`, `path` (decoded, nginx's `$uri`), `host`, `query`
//! (raw), `client` (address), `arg:<name>` and `header:<name>` (any value
//! of that argument or header), `args` and `headers` (any value of any
//! argument or header; an argument's name counts as one of its values).
//! An argument without `=` has the empty value.
//!
//! Body fields, in zones that read request bodies (`graft_contract::body`;
//! no body: no value): `body` (the raw bytes, as far as the zone reads
//! them), `body_arg:<name>` and `body_args` (the arguments of an
//! `application/x-www-form-urlencoded` body, as query arguments are read),
//! `json` (every string of a JSON body, keys included, at any depth). Each
//! is decoded once per request, on first use.
//!
//! Operators: `equals`, `prefix`, `contains`, `regex` (a linear-time
//! engine, byte semantics, at most [`MAX_REGEX_LEN`] bytes, in the subset
//! the Rust engine and PCRE read alike: [`check_portable`]), `in` (a set of
//! strings), `in_prefix` (IPv4/IPv6 prefixes; the field's value is read as
//! an address).
//!
//! The Lua twin is `lua/graft/conditions.lua`.
#![forbid(unsafe_code)]

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::{Mutex, OnceLock};

use graft_contract::body::{for_each_json_string, BodyKind};
use graft_contract::{args::for_each_arg, ConfigError, RequestView};
use ipnet::IpNet;
use prefix_trie::joint::set::JointPrefixSet;
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::ast::{
    self, Assertion, AssertionKind, ClassSetBinaryOp, ClassSetBinaryOpKind, ClassSetItem, Flag,
    FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind, RepetitionKind, RepetitionRange, Span,
    SpecialLiteralKind,
};
use serde_json::Value;

pub const MAX_REGEX_LEN: usize = 4096;
pub const MAX_DEPTH: usize = 16;
pub const MAX_LIST: usize = 100_000;
/// Compiled size limit of one regular expression.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Host,
    Query,
    Client,
    Arg(Vec<u8>),
    Args,
    Header(Vec<u8>),
    Headers,
    Body,
    BodyArg(Vec<u8>),
    BodyArgs,
    Json,
}

impl Field {
    fn reads_body(&self) -> bool {
        matches!(
            self,
            Field::Body | Field::BodyArg(_) | Field::BodyArgs | Field::Json
        )
    }
}

#[derive(Debug)]
enum Op {
    Equals(Vec<u8>),
    Prefix(Vec<u8>),
    Contains(Vec<u8>),
    Regex(Regex),
    In(HashSet<Vec<u8>>),
    InPrefix(Box<JointPrefixSet<IpNet>>),
}

/// A compiled condition.
#[derive(Debug)]
pub struct Condition(Node);

#[derive(Debug)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Test { field: Field, op: Op },
}

/// Compiles a regular expression the way every graft module does: byte
/// semantics (as PCRE without UTF mode), size-limited, and only if the Lua
/// side's PCRE reads it alike ([`check_portable`]).
///
/// Compiled expressions are kept by pattern for the life of the process: a
/// configuration with ten thousand zones that share patterns compiles each
/// once, and zones share the compiled program (a `Regex` clone is a
/// reference count).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("regex longer than {MAX_REGEX_LEN} bytes"));
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    check_portable(pattern).map_err(|e| format!("bad regex: {e}"))?;
    let re = RegexBuilder::new(pattern)
        .unicode(false)
        .nest_limit(REGEX_NEST_LIMIT)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad regex: {e}"))?;
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_CACHED_REGEXES {
        cache.clear();
    }
    cache.insert(pattern.to_string(), re.clone());
    Ok(re)
}

/// Bounds the cache of compiled expressions across reloads.
const MAX_CACHED_REGEXES: usize = 100_000;

/// Nesting limit of a pattern, the `regex` crate's default: the check
/// parses with the limit the engine compiles with.
const REGEX_NEST_LIMIT: u32 = 250;
/// The largest count PCRE takes in `{n,m}`.
const PCRE_MAX_COUNT: u32 = 65_535;
/// The longest group name PCRE takes.
const PCRE_MAX_NAME: usize = 32;

/// Refuses a pattern that the Rust engine (byte semantics) and the Lua
/// side's PCRE (10.42 without UTF mode, as nginx's `ngx.re.find(v, p, "jo")`
/// runs it: default character tables, newline LF) would read differently,
/// or that only one of them accepts. The message names the construct and
/// its byte offset. Checked on `regex-syntax`'s syntax tree, the parser the
/// engine itself uses, so escapes, classes and flags are told apart as the
/// engine reads them.
///
/// One difference is not refused but translated: without multi-line mode
/// (refused), PCRE's `$` also matches before a final newline, Rust's only at
/// the very end; the Lua side gets [`pcre_pattern`], where each `$` anchor
/// is `\z`.
pub fn check_portable(pattern: &str) -> Result<(), String> {
    dollar_anchors(pattern).map(drop)
}

/// The pattern as the Lua side hands it to PCRE: each `$` anchor (not an
/// escaped `\$`, not a `$` in a class) becomes `\z`, PCRE's very end, which
/// is what `$` means to the Rust engine. A pattern that does not pass
/// [`check_portable`] is returned as it is (it does not load).
pub fn pcre_pattern(pattern: &str) -> String {
    let Ok(dollars) = dollar_anchors(pattern) else {
        return pattern.to_string();
    };
    let mut out = String::with_capacity(pattern.len() + dollars.len());
    let mut from = 0;
    for at in dollars {
        out.push_str(&pattern[from..at]);
        out.push_str("\\z");
        from = at + 1;
    }
    out.push_str(&pattern[from..]);
    out
}

/// A condition as the Lua side compiles it: every `regex` value through
/// [`pcre_pattern`], everything else as it is.
pub fn lua_condition(cond: &Value) -> Value {
    match cond {
        Value::Object(obj) => {
            let is_regex = obj.get("op").and_then(Value::as_str) == Some("regex");
            Value::Object(
                obj.iter()
                    .map(|(k, v)| {
                        let v = match (k.as_str(), v) {
                            ("value", Value::String(p)) if is_regex => {
                                Value::String(pcre_pattern(p))
                            }
                            _ => lua_condition(v),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            )
        }
        Value::Array(list) => Value::Array(list.iter().map(lua_condition).collect()),
        other => other.clone(),
    }
}

/// A module configuration as the Lua side gets it, for a module whose list
/// `list` holds entries with a `when` condition (waf `rules`, headers
/// `rules`, rate_limit `limits`): each `when` through [`lua_condition`].
pub fn lua_conditions_in(config: &Value, list: &str) -> Value {
    let mut config = config.clone();
    if let Some(entries) = config.get_mut(list).and_then(Value::as_array_mut) {
        for entry in entries {
            if let Some(when) = entry.get_mut("when") {
                *when = lua_condition(when);
            }
        }
    }
    config
}

/// Parses as the engine does and walks the tree: the offsets of the `$`
/// anchors of a portable pattern, or why it is not portable.
fn dollar_anchors(pattern: &str) -> Result<Vec<usize>, String> {
    let tree = ast::parse::ParserBuilder::new()
        .nest_limit(REGEX_NEST_LIMIT)
        .octal(false)
        .build()
        .parse(pattern)
        .map_err(|e| parse_error(pattern, &e))?;
    let mut dollars = ast::visit(
        &tree,
        Portable {
            pattern,
            dollars: Vec::new(),
        },
    )?;
    dollars.sort_unstable();
    Ok(dollars)
}

fn refusal(construct: &str, at: usize, why: impl std::fmt::Display) -> String {
    format!("`{construct}` at byte {at}: {why}")
}

const UNICODE_CLASS: &str = "a Unicode property class: Rust refuses it in byte mode, PCRE (without UTF) applies it to each byte as a Latin-1 character; write the bytes or an ASCII class such as `[A-Za-z]`";

/// The walk over the syntax tree: refuses what the engines read apart,
/// notes each `$` anchor.
struct Portable<'p> {
    pattern: &'p str,
    dollars: Vec<usize>,
}

impl Portable<'_> {
    fn text(&self, span: &Span) -> &str {
        &self.pattern[span.start.offset..span.end.offset]
    }

    fn refuse(&self, span: &Span, why: &str) -> Result<(), String> {
        Err(refusal(self.text(span), span.start.offset, why))
    }

    /// Refuses what spans from `from` to the end of `to`.
    fn refuse_between(&self, from: &Span, to: &Span, why: &str) -> Result<(), String> {
        let (a, b) = (from.start.offset, to.end.offset);
        Err(refusal(&self.pattern[a..b], a, why))
    }

    fn assertion(&mut self, a: &Assertion) -> Result<(), String> {
        match a.kind {
            AssertionKind::StartLine
            | AssertionKind::StartText
            | AssertionKind::EndText
            | AssertionKind::WordBoundary
            | AssertionKind::NotWordBoundary => Ok(()),
            AssertionKind::EndLine => {
                self.dollars.push(a.span.start.offset);
                Ok(())
            }
            AssertionKind::WordBoundaryStartAngle => self.refuse(
                &a.span,
                "Rust reads the start of a word, PCRE a literal `<`; write `<` for the character, `\\b` for a word boundary",
            ),
            AssertionKind::WordBoundaryEndAngle => self.refuse(
                &a.span,
                "Rust reads the end of a word, PCRE a literal `>`; write `>` for the character, `\\b` for a word boundary",
            ),
            AssertionKind::WordBoundaryStart
            | AssertionKind::WordBoundaryEnd
            | AssertionKind::WordBoundaryStartHalf
            | AssertionKind::WordBoundaryEndHalf => self.refuse(
                &a.span,
                "a word boundary only Rust has (PCRE reads `\\b` and then the braces as literal text); write `\\b`",
            ),
        }
    }

    /// Escapes the engines read apart, in or out of a class.
    fn literal(&self, l: &ast::Literal) -> Result<(), String> {
        match l.kind {
            LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong)
            | LiteralKind::HexBrace(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => {
                self.refuse(
                    &l.span,
                    "`\\u` and `\\U` escapes are Rust's only (PCRE refuses them); write the bytes as `\\xHH`",
                )
            }
            LiteralKind::HexBrace(HexLiteralKind::X) if !l.c.is_ascii() => self.refuse(
                &l.span,
                "above 7F, Rust reads `\\x{..}` as a code point in UTF-8 (several bytes), PCRE as one byte (and refuses values above FF); write each byte as `\\xHH`",
            ),
            LiteralKind::Special(SpecialLiteralKind::VerticalTab) => self.refuse(
                &l.span,
                "Rust reads the vertical tab (0x0B), PCRE any vertical white space; write `\\x0B` for the tab, `[\\n\\x0B\\f\\r\\x85]` for the class",
            ),
            LiteralKind::Octal => self.refuse(
                &l.span,
                "an octal escape; write the byte as `\\xHH`",
            ),
            LiteralKind::Verbatim
            | LiteralKind::Meta
            | LiteralKind::Superfluous
            | LiteralKind::HexFixed(HexLiteralKind::X)
            | LiteralKind::HexBrace(HexLiteralKind::X)
            | LiteralKind::Special(_) => Ok(()),
        }
    }

    fn class_literal(&self, l: &ast::Literal) -> Result<(), String> {
        self.literal(l)?;
        if l.kind == LiteralKind::Verbatim && !l.c.is_ascii() {
            return self.refuse(
                &l.span,
                "a character outside ASCII in a class: Rust refuses it in byte mode, PCRE (without UTF) takes each of its bytes as a member; write an alternation such as `(?:é|[a-z])`",
            );
        }
        Ok(())
    }

    fn flags(&self, flags: &ast::Flags) -> Result<(), String> {
        let mut negated = false;
        for item in &flags.items {
            let flag = match &item.kind {
                FlagsItemKind::Negation => {
                    negated = true;
                    continue;
                }
                FlagsItemKind::Flag(f) => f,
            };
            let why = match flag {
                Flag::CaseInsensitive | Flag::DotMatchesNewLine | Flag::SwapGreed => continue,
                Flag::MultiLine | Flag::IgnoreWhitespace if negated => continue,
                Flag::MultiLine => "multi-line mode: the engines disagree on `^` and `$` next to a newline (Rust also matches after a final one), and PCRE is handed each `$` as `\\z`; match the newline itself, e.g. `(?:^|\\n)x(?:\\n|$)`",
                Flag::IgnoreWhitespace => "extended mode: the engines skip white space and `#` comments differently (Rust also inside `[...]`); write the pattern without it",
                Flag::Unicode => "Unicode mode is Rust's only (PCRE refuses the flag); graft matches bytes",
                Flag::CRLF => "Rust reads CRLF mode, PCRE a recursion (`(?R)`); match `\\r` yourself",
            };
            return Err(refusal(
                self.text(&item.span),
                item.span.start.offset,
                format!("inline flag: {why}"),
            ));
        }
        Ok(())
    }

    fn group_name(&self, name: &ast::CaptureName) -> Result<(), String> {
        let n = name.name.as_bytes();
        let pcre_takes = n.len() <= PCRE_MAX_NAME
            && n.first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && n.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if pcre_takes {
            return Ok(());
        }
        self.refuse(
            &name.span,
            "a group name PCRE refuses: ASCII letters, digits and `_`, not starting with a digit, at most 32",
        )
    }

    fn repetition(&self, r: &ast::Repetition) -> Result<(), String> {
        if self
            .text(&r.op.span)
            .contains(|c: char| c.is_ascii_whitespace())
        {
            return self.refuse(
                &r.op.span,
                "a count with spaces: PCRE 10.42 reads the braces as literal text; write it without spaces",
            );
        }
        if let RepetitionKind::Range(range) = &r.op.kind {
            let most = match *range {
                RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) => n,
                RepetitionRange::Bounded(m, n) => m.max(n),
            };
            if most > PCRE_MAX_COUNT {
                return self.refuse(&r.op.span, "PCRE takes counts up to 65535");
            }
        }
        match &*r.ast {
            ast::Ast::Repetition(inner) => self.refuse_between(
                &inner.op.span,
                &r.op.span,
                "a quantifier on a quantifier: PCRE reads `++`, `*+`, `?+` and `{n}+` as possessive and refuses the others, Rust repeats the repetition; write a group, e.g. `(?:a+)+`",
            ),
            ast::Ast::Assertion(a) => self.refuse_between(
                &a.span,
                &r.op.span,
                "a quantified assertion: PCRE refuses it",
            ),
            ast::Ast::Literal(l) if l.kind == LiteralKind::Verbatim && !l.c.is_ascii() => self
                .refuse_between(
                    &l.span,
                    &r.op.span,
                    "PCRE (without UTF) repeats only the last byte of a character outside ASCII, Rust the whole character; write a group, e.g. `(?:é)+`",
                ),
            _ => Ok(()),
        }
    }

    /// PCRE refuses `[:...:]`, `[.....]` and `[=...=]` outside a class (its
    /// `check_posix_syntax`, ported); Rust reads a plain class.
    /// Two unescaped `-` in a row inside a class (`[--z]`): Rust reads a
    /// literal `-` (or its set difference), PCRE a range that starts at
    /// `-`, or refuses one out of order.
    fn dashes_in_class(&self, start: usize, end: usize) -> Result<(), String> {
        let class = &self.pattern.as_bytes()[start..end.min(self.pattern.len())];
        let mut escaped = false;
        for (i, pair) in class.windows(2).enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match pair {
                [b'\\', _] => escaped = true,
                [b'-', b'-'] => {
                    return Err(refusal(
                        "--",
                        start + i,
                        "two `-` in a row in a class: Rust reads a literal `-` (or a set difference), PCRE a range from `-`; write `\\-` for a dash",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn posix_outside_class(&self, at: usize) -> Result<(), String> {
        let rest = &self.pattern.as_bytes()[at + 1..];
        let Some(&t) = rest.first().filter(|t| matches!(t, b':' | b'.' | b'=')) else {
            return Ok(());
        };
        let mut i = 1;
        while rest.len().saturating_sub(i) >= 2 {
            match (rest[i], rest[i + 1]) {
                (b'\\', b']' | b'\\') => i += 1,
                (b'[', c) if c == t => return Ok(()),
                (b']', _) => return Ok(()),
                (c, b']') if c == t => {
                    return Err(refusal(
                        &self.pattern[at..at + i + 3],
                        at,
                        "POSIX class syntax outside a class: PCRE refuses it, Rust reads a plain class; write `[[:alpha:]]` for a POSIX class, `\\[` for a bracket",
                    ))
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

impl ast::Visitor for Portable<'_> {
    type Output = Vec<usize>;
    type Err = String;

    fn finish(self) -> Result<Vec<usize>, String> {
        Ok(self.dollars)
    }

    fn visit_pre(&mut self, node: &ast::Ast) -> Result<(), String> {
        use ast::Ast;
        match node {
            Ast::Assertion(a) => self.assertion(a),
            Ast::Literal(l) => self.literal(l),
            Ast::Flags(f) => self.flags(&f.flags),
            Ast::Group(g) => match &g.kind {
                GroupKind::NonCapturing(f) => self.flags(f),
                GroupKind::CaptureName { name, .. } => self.group_name(name),
                GroupKind::CaptureIndex(_) => Ok(()),
            },
            Ast::ClassUnicode(c) => self.refuse(&c.span, UNICODE_CLASS),
            Ast::ClassBracketed(c) => {
                self.posix_outside_class(c.span.start.offset)?;
                self.dashes_in_class(c.span.start.offset, c.span.end.offset)
            }
            Ast::Repetition(r) => self.repetition(r),
            Ast::Empty(_)
            | Ast::Dot(_)
            | Ast::ClassPerl(_)
            | Ast::Alternation(_)
            | Ast::Concat(_) => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
        match item {
            ClassSetItem::Literal(l) => self.class_literal(l),
            ClassSetItem::Range(r) => {
                self.class_literal(&r.start)?;
                self.class_literal(&r.end)
            }
            ClassSetItem::Unicode(c) => self.refuse(&c.span, UNICODE_CLASS),
            ClassSetItem::Bracketed(b) => self.refuse(
                &b.span,
                "a class inside a class: Rust nests it, PCRE reads its `[` as a literal (and `[:`, `[.`, `[=` as POSIX syntax); write `\\[` for a bracket",
            ),
            ClassSetItem::Empty(_)
            | ClassSetItem::Ascii(_)
            | ClassSetItem::Perl(_)
            | ClassSetItem::Union(_) => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(&mut self, op: &ClassSetBinaryOp) -> Result<(), String> {
        let symbol = match op.kind {
            ClassSetBinaryOpKind::Intersection => "&&",
            ClassSetBinaryOpKind::Difference => "--",
            ClassSetBinaryOpKind::SymmetricDifference => "~~",
        };
        let from = op.lhs.span().end.offset;
        let at = self.pattern[from..].find(symbol).map_or(from, |i| from + i);
        Err(refusal(
            symbol,
            at,
            "a class operation only Rust has (PCRE reads the characters literally); list the members instead",
        ))
    }
}

/// A parse error, said in terms of what PCRE would have read: most of the
/// constructs Rust's parser refuses are PCRE's.
fn parse_error(pattern: &str, e: &ast::Error) -> String {
    use ast::ErrorKind as K;
    let at = e.span().start.offset;
    let text = &pattern[at..e.span().end.offset];
    let rest = &pattern[at..];
    let pcre_only = |construct: &str, what: &str| {
        refusal(
            construct,
            at,
            format!("{what} (PCRE only; the Rust engine has none)"),
        )
    };
    match e.kind() {
        K::UnsupportedBackreference if text == "\\0" => refusal(
            text,
            at,
            "PCRE reads an octal escape, which graft does not take; write the byte as `\\xHH`",
        ),
        K::UnsupportedBackreference => pcre_only(text, "a backreference"),
        K::UnsupportedLookAround => pcre_only(text, "look-around"),
        K::EscapeUnrecognized | K::ClassEscapeInvalid => escape_error(text, at),
        K::FlagUnrecognized => group_error(pattern, at),
        K::RepetitionMissing => {
            let before = pattern[..at].chars().next_back();
            let after = rest.chars().nth(1);
            match (before, rest.chars().next(), after) {
                (Some('('), Some('*'), _) => refusal(
                    &pattern[at - 1..at + 1],
                    at - 1,
                    "a backtracking verb or a start-of-pattern option `(*...)` (PCRE only; the Rust engine has none)",
                ),
                (Some('('), Some('?'), Some(')')) => refusal(
                    &pattern[at - 1..at + 2],
                    at - 1,
                    "an empty option setting (PCRE only; Rust refuses it); remove it",
                ),
                (_, Some('{'), _) => refusal(
                    "{",
                    at,
                    "a brace with nothing before it to repeat: PCRE reads it as a literal (or refuses a count there), Rust refuses it; write `\\{`",
                ),
                _ => format!("{} at byte {at}", e.kind()),
            }
        }
        K::RepetitionCountUnclosed | K::RepetitionCountDecimalEmpty => {
            let open = if rest.starts_with('{') {
                at
            } else {
                pattern[..at].rfind('{').unwrap_or(at)
            };
            let close = pattern[open..]
                .find('}')
                .map_or(pattern.len(), |i| open + i + 1);
            refusal(
                &pattern[open..close],
                open,
                "PCRE 10.42 reads a brace that is not a count `{n}`, `{n,}` or `{n,m}` as literal text, Rust refuses it; write `\\{` for the brace, or a count such as `{0,3}`",
            )
        }
        kind if text.is_empty() => format!("{kind} at byte {at}"),
        kind => format!("{kind}: `{text}` at byte {at}"),
    }
}

/// An escape Rust refuses, with what PCRE would have read.
fn escape_error(text: &str, at: usize) -> String {
    let what = match text.chars().nth(1) {
        Some('Q' | 'E') => "`\\Q...\\E` quoting (PCRE only); escape each special character with `\\` instead",
        Some('K') => "PCRE's match-start reset (PCRE only)",
        Some('R') => "PCRE's any newline sequence (PCRE only); write `(?:\\r\\n|[\\n\\x0B\\f\\r\\x85])`",
        Some('h') => "PCRE's horizontal white space (PCRE only); write `[\\t \\xA0]`",
        Some('H') => "PCRE's not-horizontal-white-space (PCRE only); write `[^\\t \\xA0]`",
        Some('V') => "PCRE's not-vertical-white-space (PCRE only); write `[^\\n\\x0B\\f\\r\\x85]`",
        Some('Z') => "PCRE's end or before a final newline (PCRE only); write `\\n?\\z` for that, `$` or `\\z` for the very end",
        Some('e') => "PCRE's escape character (PCRE only); write `\\x1B`",
        Some('c') => "PCRE's control character `\\cX` (PCRE only); write the byte as `\\xHH`",
        Some('o') => "PCRE's octal escape `\\o{...}` (PCRE only); write the byte as `\\xHH`",
        Some('N') => "PCRE's not-a-newline (PCRE only); write `[^\\n]`",
        Some('C') => "PCRE's one code unit (PCRE only); write `(?s:.)`",
        Some('X') => "PCRE's extended grapheme cluster (PCRE only)",
        Some('G') => "PCRE's first-match-position assertion (PCRE only)",
        Some('g' | 'k') => "a PCRE backreference or subroutine call (PCRE only; the Rust engine has none)",
        Some('b') => "in a class PCRE reads a backspace, Rust refuses it; write `\\x08`",
        _ => "an escape Rust refuses here; escape only punctuation, or write the byte as `\\xHH`",
    };
    refusal(text, at, what)
}

/// A group or an inline option Rust does not know: `at` is the character
/// Rust stopped at, after `(?` and perhaps some flags.
fn group_error(pattern: &str, at: usize) -> String {
    let bytes = pattern.as_bytes();
    let mut open = at;
    while open > 0 && (bytes[open - 1].is_ascii_alphabetic() || bytes[open - 1] == b'-') {
        open -= 1;
    }
    let rest = &pattern[at..];
    let first = at == open;
    let from = open.saturating_sub(2);
    let construct = |len: usize| &pattern[from..at + len];
    let pcre_only = |len: usize, what: &str| {
        refusal(
            construct(len),
            from,
            format!("{what} (PCRE only; the Rust engine has none)"),
        )
    };
    let c = rest.chars().next().unwrap_or(' ');
    match c {
        '>' if first => pcre_only(1, "an atomic group"),
        '|' if first => pcre_only(1, "a branch reset group"),
        '#' if first => refusal(
            construct(1),
            from,
            "a comment group (PCRE only; Rust refuses it); remove it",
        ),
        '\'' if first => refusal(
            construct(1),
            from,
            "a named group in quotes (PCRE only; Rust refuses it); write `(?<name>...)`",
        ),
        '(' if first => pcre_only(1, "a conditional group"),
        '&' if first => pcre_only(1, "a subroutine call"),
        '^' if first => refusal(
            construct(1),
            from,
            "an option reset `(?^)` (PCRE only; Rust refuses it); write `(?-is)`",
        ),
        'P' if first && (rest.starts_with("P=") || rest.starts_with("P>")) => {
            pcre_only(2, "a named backreference or subroutine call")
        }
        'C' if first => pcre_only(1, "a callout"),
        '+' if first => pcre_only(1, "a subroutine call"),
        '0'..='9' if first || bytes[at - 1] == b'-' => {
            pcre_only(1, "a recursion or subroutine call")
        }
        c if c.is_ascii_alphabetic() => refusal(
            &rest[..1],
            at,
            "an inline flag Rust does not know (both engines take i, s, U and the negated m and x)",
        ),
        _ => refusal(construct(c.len_utf8()), from, "a group Rust does not know"),
    }
}

/// Parses an address prefix (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("\"{s}\" is not an IP prefix"))
}

fn strings(v: &Value, at: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let list = v
        .as_array()
        .ok_or_else(|| ConfigError::new(at, "must be a list of strings"))?;
    if list.len() > MAX_LIST {
        return Err(ConfigError::new(
            at,
            format!("more than {MAX_LIST} entries"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| ConfigError::new(format!("{at}[{i}]"), "must be a string"))
        })
        .collect()
}

fn parse_field(name: &str) -> Result<Field, String> {
    Ok(match name {
        "method" => Field::Method,
        "path" => Field::Path,
        "host" => Field::Host,
        "query" => Field::Query,
        "client" => Field::Client,
        "args" => Field::Args,
        "headers" => Field::Headers,
        "body" => Field::Body,
        "body_args" => Field::BodyArgs,
        "json" => Field::Json,
        _ => match name.split_once(':') {
            Some(("arg", a)) if !a.is_empty() => Field::Arg(a.as_bytes().to_vec()),
            Some(("body_arg", a)) if !a.is_empty() => Field::BodyArg(a.as_bytes().to_vec()),
            Some(("header", h)) if !h.is_empty() => Field::Header(h.to_ascii_lowercase().into_bytes()),
            _ => {
                return Err(format!(
                    "unknown field \"{name}\"; known: method, path, host, query, client, args, headers, arg:<name>, header:<name>, body, body_args, body_arg:<name>, json"
                ))
            }
        },
    })
}

impl Condition {
    /// The field and value when the condition is one `equals` test: such
    /// conditions over one field can be answered together by an
    /// [`EqualsIndex`].
    pub fn equals_test(&self) -> Option<(FieldRef<'_>, &[u8])> {
        match &self.0 {
            Node::Test {
                field,
                op: Op::Equals(v),
            } => Some((FieldRef(field), v)),
            _ => None,
        }
    }

    /// Compiles a condition; errors name the path inside it (`any[1].op`).
    pub fn parse(v: &Value) -> Result<Condition, ConfigError> {
        Node::parse_at(v, 0).map(Condition)
    }

    pub fn eval(&self, subject: &Subject) -> bool {
        self.0.eval(subject)
    }

    /// Whether the condition tests a field of the request body.
    pub fn reads_body(&self) -> bool {
        self.0.reads_body()
    }
}

impl Node {
    fn parse_at(v: &Value, depth: usize) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(ConfigError::new(
                "",
                format!("nested deeper than {MAX_DEPTH}"),
            ));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::new("", "a condition is an object"))?;
        if let Some(node) = Node::parse_combination(obj, depth)? {
            return Ok(node);
        }
        Node::parse_test(obj)
    }

    /// `{ "all": [...] }`, `{ "any": [...] }` or `{ "not": {...} }`, each
    /// alone in its object; `None` for anything else.
    fn parse_combination(
        obj: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<Option<Node>, ConfigError> {
        for (key, list) in [("all", true), ("any", false)] {
            if let Some(items) = obj.get(key) {
                if obj.len() != 1 {
                    return Err(ConfigError::new(
                        "",
                        format!("\"{key}\" stands alone in its object"),
                    ));
                }
                let items = items
                    .as_array()
                    .ok_or_else(|| ConfigError::new(key, "must be a list of conditions"))?;
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        Node::parse_at(c, depth + 1).map_err(|e| e.within(&format!("{key}[{i}]")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Some(if list {
                    Node::All(parsed)
                } else {
                    Node::Any(parsed)
                }));
            }
        }
        if let Some(inner) = obj.get("not") {
            if obj.len() != 1 {
                return Err(ConfigError::new("", "\"not\" stands alone in its object"));
            }
            let inner = Node::parse_at(inner, depth + 1).map_err(|e| e.within("not"))?;
            return Ok(Some(Node::Not(Box::new(inner))));
        }
        Ok(None)
    }

    /// `{ "field": ..., "op": ..., "value" | "values": ... }`.
    fn parse_test(obj: &serde_json::Map<String, Value>) -> Result<Node, ConfigError> {
        for key in obj.keys() {
            if !["field", "op", "value", "values"].contains(&key.as_str()) {
                return Err(ConfigError::new(
                    key.as_str(),
                    "unknown key; a condition has all, any, not, or field, op and value(s)",
                ));
            }
        }
        let field_name = obj
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new("field", "missing, or not a string"))?;
        let field = parse_field(field_name).map_err(|e| ConfigError::new("field", e))?;
        let op_name = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new("op", "missing, or not a string"))?;
        Ok(Node::Test {
            field,
            op: parse_op(obj, op_name)?,
        })
    }

    fn reads_body(&self) -> bool {
        match self {
            Node::All(c) | Node::Any(c) => c.iter().any(Node::reads_body),
            Node::Not(c) => c.reads_body(),
            Node::Test { field, .. } => field.reads_body(),
        }
    }

    fn eval(&self, subject: &Subject) -> bool {
        match self {
            Node::All(c) => c.iter().all(|c| c.eval(subject)),
            Node::Any(c) => c.iter().any(|c| c.eval(subject)),
            Node::Not(c) => !c.eval(subject),
            Node::Test { field, op } => test(field, op, subject),
        }
    }
}

/// The operator `op_name` with the value(s) it needs from `obj`.
fn parse_op(obj: &serde_json::Map<String, Value>, op_name: &str) -> Result<Op, ConfigError> {
    let value = || {
        obj.get("value").and_then(Value::as_str).ok_or_else(|| {
            ConfigError::new("value", format!("\"{op_name}\" needs a string \"value\""))
        })
    };
    let values = || {
        obj.get("values")
            .ok_or_else(|| {
                ConfigError::new("values", format!("\"{op_name}\" needs a list \"values\""))
            })
            .and_then(|v| strings(v, "values"))
    };
    Ok(match op_name {
        "equals" => Op::Equals(value()?.as_bytes().to_vec()),
        "prefix" => Op::Prefix(value()?.as_bytes().to_vec()),
        "contains" => Op::Contains(value()?.as_bytes().to_vec()),
        "regex" => Op::Regex(compile_regex(value()?).map_err(|e| ConfigError::new("value", e))?),
        "in" => Op::In(values()?.into_iter().collect()),
        "in_prefix" => {
            let mut set = JointPrefixSet::new();
            for (i, p) in values()?.iter().enumerate() {
                let p = String::from_utf8_lossy(p);
                let net =
                    parse_prefix(&p).map_err(|e| ConfigError::new(format!("values[{i}]"), e))?;
                set.insert(net);
            }
            Op::InPrefix(Box::new(set))
        }
        other => {
            return Err(ConfigError::new(
                "op",
                format!("unknown operator \"{other}\"; known: equals, prefix, contains, regex, in, in_prefix"),
            ))
        }
    })
}

fn op_matches(op: &Op, v: &[u8]) -> bool {
    match op {
        Op::Equals(x) => v == x.as_slice(),
        Op::Prefix(x) => v.starts_with(x),
        Op::Contains(x) => x.is_empty() || v.windows(x.len()).any(|w| w == x.as_slice()),
        Op::Regex(re) => re.is_match(v),
        Op::In(set) => set.contains(v),
        Op::InPrefix(set) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .is_some_and(|ip| in_prefix(set, ip)),
    }
}

fn in_prefix(set: &JointPrefixSet<IpNet>, ip: IpAddr) -> bool {
    set.get_lpm(&IpNet::from(ip)).is_some()
}

fn test(field: &Field, op: &Op, s: &Subject) -> bool {
    let req = s.req;
    match field {
        Field::Method => op_matches(op, req.method()),
        Field::Path => op_matches(op, req.path()),
        Field::Host => op_matches(op, req.host()),
        Field::Query => op_matches(op, req.query().unwrap_or_default()),
        Field::Client => match (op, req.client_addr()) {
            (Op::InPrefix(set), Some(ip)) => in_prefix(set, ip),
            (_, Some(ip)) => op_matches(op, ip.to_string().as_bytes()),
            (_, None) => false,
        },
        Field::Arg(name) => s
            .args()
            .any(|(n, v)| n == name.as_slice() && op_matches(op, v)),
        Field::Args => s
            .args()
            .any(|(n, v)| op_matches(op, n) || op_matches(op, v)),
        Field::Body => req.body().is_some_and(|b| op_matches(op, b)),
        Field::BodyArg(name) => s
            .body_args()
            .any(|(n, v)| n == name.as_slice() && op_matches(op, v)),
        Field::BodyArgs => s
            .body_args()
            .any(|(n, v)| op_matches(op, n) || op_matches(op, v)),
        Field::Json => s.json_strings().any(|v| op_matches(op, v)),
        Field::Header(name) => {
            let mut hit = false;
            req.for_each_header(&mut |n, v| {
                if n.eq_ignore_ascii_case(name) && op_matches(op, v) {
                    hit = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            hit
        }
        Field::Headers => {
            let mut hit = false;
            req.for_each_header(&mut |_, v| {
                if op_matches(op, v) {
                    hit = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            hit
        }
    }
}

/// A condition's field, for grouping conditions by the field they test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a>(&'a Field);

/// Every value `field` has in the request: the values an `equals` test on
/// it compares (for `args`, every argument's name and value).
fn for_each_value(field: &Field, s: &Subject, f: &mut dyn FnMut(&[u8])) {
    let req = s.req;
    match field {
        Field::Method => f(req.method()),
        Field::Path => f(req.path()),
        Field::Host => f(req.host()),
        Field::Query => f(req.query().unwrap_or_default()),
        Field::Client => {
            if let Some(ip) = req.client_addr() {
                f(ip.to_string().as_bytes());
            }
        }
        Field::Arg(name) => s
            .args()
            .filter(|(n, _)| *n == name.as_slice())
            .for_each(|(_, v)| f(v)),
        Field::Args => s.args().for_each(|(n, v)| {
            f(n);
            f(v);
        }),
        Field::Body => {
            if let Some(b) = req.body() {
                f(b);
            }
        }
        Field::BodyArg(name) => s
            .body_args()
            .filter(|(n, _)| *n == name.as_slice())
            .for_each(|(_, v)| f(v)),
        Field::BodyArgs => s.body_args().for_each(|(n, v)| {
            f(n);
            f(v);
        }),
        Field::Json => s.json_strings().for_each(f),
        Field::Header(name) => req.for_each_header(&mut |n, v| {
            if n.eq_ignore_ascii_case(name) {
                f(v);
            }
            ControlFlow::Continue(())
        }),
        Field::Headers => req.for_each_header(&mut |_, v| {
            f(v);
            ControlFlow::Continue(())
        }),
    }
}

/// Many `equals` conditions on one field, answered with one lookup per
/// value of the field instead of one test per condition: a list of rules
/// each naming one bad argument value costs the same for 3 rules or 300.
#[derive(Debug)]
pub struct EqualsIndex {
    field: Field,
    /// Each value, and the positions (ascending) of the conditions that
    /// compare the field with it.
    by_value: hashbrown::HashMap<Vec<u8>, Vec<usize>>,
}

impl EqualsIndex {
    pub fn new(field: FieldRef<'_>) -> Self {
        EqualsIndex {
            field: field.0.clone(),
            by_value: Default::default(),
        }
    }

    /// Adds condition number `position`, which tests this index's field
    /// for equality with `value`. Positions are added in ascending order.
    pub fn insert(&mut self, value: &[u8], position: usize) {
        self.by_value
            .entry(value.to_vec())
            .or_default()
            .push(position);
    }

    /// The positions of the conditions that hold for the request, ascending,
    /// each once: the ones a test of each condition in turn would find.
    pub fn matching(&self, subject: &Subject) -> Vec<usize> {
        let mut hits = Vec::new();
        for_each_value(&self.field, subject, &mut |v| {
            if let Some(positions) = self.by_value.get(v) {
                hits.extend_from_slice(positions);
            }
        });
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

/// A request as conditions see it: the view, and its query arguments
/// decoded on first use, once.
pub struct Subject<'a> {
    pub req: &'a dyn RequestView,
    args: OnceCell<DecodedArgs>,
    body_args: OnceCell<DecodedArgs>,
    json: OnceCell<DecodedArgs>,
}

/// A request's query arguments, decoded: every name and value back to back
/// in one buffer, with where each ends (a few allocations for them all,
/// not two an argument).
#[derive(Default)]
struct DecodedArgs {
    bytes: Vec<u8>,
    /// Per argument, where its name ends and where its value ends.
    ends: Vec<(usize, usize)>,
}

impl<'a> Subject<'a> {
    pub fn new(req: &'a dyn RequestView) -> Self {
        Subject {
            req,
            args: OnceCell::new(),
            body_args: OnceCell::new(),
            json: OnceCell::new(),
        }
    }

    /// Every query argument, decoded (no value: empty), in order.
    pub fn args(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self
            .args
            .get_or_init(|| DecodedArgs::of_query(self.req.query()));
        decoded.pairs()
    }

    /// Every argument of a form body, decoded as query arguments are (none
    /// without a body, or for another `Content-Type`), in order.
    pub fn body_args(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self.body_args.get_or_init(|| {
            let form = self
                .req
                .body()
                .filter(|_| BodyKind::of(self.req.header(b"content-type")) == BodyKind::Form);
            DecodedArgs::of_query(form)
        });
        decoded.pairs()
    }

    /// Every string of a JSON body, decoded (`graft_contract::body`), in
    /// order (none without a body, or for another `Content-Type`).
    pub fn json_strings(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let decoded = self.json.get_or_init(|| {
            let mut out = DecodedArgs::default();
            if let Some(body) = self
                .req
                .body()
                .filter(|_| BodyKind::of(self.req.header(b"content-type")) == BodyKind::Json)
            {
                for_each_json_string(body, |s| {
                    let start = out.bytes.len();
                    out.bytes.extend_from_slice(s);
                    out.ends.push((start, out.bytes.len()));
                });
            }
            out
        });
        decoded.pairs().map(|(_, v)| v)
    }
}

impl DecodedArgs {
    fn of_query(query: Option<&[u8]>) -> DecodedArgs {
        let mut out = DecodedArgs::default();
        if let Some(q) = query {
            for_each_arg(q, |n, v| {
                out.bytes.extend_from_slice(n);
                let name_end = out.bytes.len();
                out.bytes.extend_from_slice(v.unwrap_or_default());
                out.ends.push((name_end, out.bytes.len()));
            });
        }
        out
    }

    /// Each entry's two parts (a name and a value; for strings, empty and
    /// the string).
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self;
        let mut start = 0;
        decoded.ends.iter().map(move |&(name_end, end)| {
            let arg = (
                &decoded.bytes[start..name_end],
                &decoded.bytes[name_end..end],
            );
            start = end;
            arg
        })
    }
}

#[cfg(test)]
mod tests;
