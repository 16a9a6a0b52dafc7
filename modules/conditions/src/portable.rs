//! The subset of regular expressions the Rust engine (byte semantics) and
//! the Lua side's PCRE read alike: [`check_portable`] walks
//! `regex-syntax`'s tree and refuses the rest, naming the construct and its
//! offset; [`pcre_pattern`] writes a portable pattern as PCRE must get it.
use regex_syntax::ast::{
    self, Assertion, AssertionKind, ClassSetBinaryOp, ClassSetBinaryOpKind, ClassSetItem, Flag,
    FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind, RepetitionKind, RepetitionRange, Span,
    SpecialLiteralKind,
};
use serde_json::Value;

/// Nesting limit of a pattern, the `regex` crate's default: the check
/// parses with the limit the engine compiles with.
pub(crate) const REGEX_NEST_LIMIT: u32 = 250;
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
    ///
    /// A `-` after a class's leading `]` (`[]-a]`, `[^]-a]`): Rust reads the
    /// `]` alone and a literal `-`, PCRE a range that starts at `]` (or
    /// refuses one out of order, `[]-@]`).
    fn dashes_in_class(&self, start: usize, end: usize) -> Result<(), String> {
        let class = &self.pattern.as_bytes()[start..end.min(self.pattern.len())];
        let open = if class.get(1) == Some(&b'^') { 2 } else { 1 };
        if let [b']', b'-', next, ..] = class.get(open..).unwrap_or_default() {
            if *next != b']' {
                return Err(refusal(
                    "]-",
                    start + open,
                    "a `-` after a class's leading `]`: Rust reads a literal `]` and `-`, PCRE a range that starts at `]`; write `\\]` and `\\-`",
                ));
            }
        }
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

    /// A range that ends at an unescaped `[` (`[a-[]`): Rust reads a
    /// literal `[`, PCRE the start of POSIX syntax where one follows
    /// (`[a-[:alpha:]]` is its "invalid range"), a `[` elsewhere.
    fn range_to_bracket(&self, end: &ast::Literal) -> Result<(), String> {
        if end.kind != LiteralKind::Verbatim || end.c != '[' {
            return Ok(());
        }
        Err(refusal(
            "-[",
            end.span.start.offset.saturating_sub(1),
            "a range that ends at `[`: Rust reads a literal `[`, PCRE the start of a POSIX class where `[:...:]` follows; write `\\[`",
        ))
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
                self.class_literal(&r.end)?;
                self.range_to_bracket(&r.end)
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
