//! The signature lists, compiled: one regex set over every pattern, and a
//! literal pass before it.
//!
//! Most of what the WAF reads matches no signature, and a regex set pays
//! for each value it is asked about (its engine's setup: about 110 ns a
//! value, for the 800 values of a 16 KB form) and reads each byte through
//! a lazy DFA of every pattern at once. So the targets of a request are
//! first joined into one buffer (one value a line) and searched once for
//! the literals the patterns need: for each pattern, the set of literals
//! every one of its matches starts with (`regex-syntax`'s prefix
//! extraction, from the very syntax tree the regex compiles). Where none of
//! a pattern's literals occurs, the pattern cannot match any target, and
//! no regex runs for it. A pattern whose literal is there runs once over
//! the joined buffer (where `^` and `$` hold at each line's ends, so a
//! target reads as it reads alone) and over the body's bytes; only where
//! one matches the joined buffer does the set read each short target, as
//! before: the verdict is always a target's own. A request that finds the
//! pass more than [`MAX_REPORTS`] literals is read by the set whole.
//!
//! The literals are searched for in one walk of an Aho-Corasick DFA that
//! reports every occurrence, overlapping ones too. A walk a byte at a time
//! waits on each transition's load before the next (about 1.8 ns a byte,
//! whatever the bytes are), so a long value is cut into [`LANES`] parts
//! walked side by side, each on into the next by a literal's length less
//! one byte: every literal that starts in a part ends in its walk, and the
//! processor overlaps the parts' loads.
//!
//! The pass is a filter and never a verdict. It finds a literal wherever
//! one occurs in a target, ASCII case-insensitively (as the `(?i)`
//! patterns, in bytes mode, fold): a literal found where the pattern then
//! does not match (a line break inside it, a case the pattern does not
//! fold, an assertion that fails) only costs that pattern's run. A set
//! whose patterns do not all yield literals (one that starts with a class
//! of many bytes, say) is searched as before: the set over each target.
use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};
use graft_conditions::REGEX_SIZE_LIMIT;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// How many literals the pass finds in a request before it stops and the
/// set reads every target instead: a report costs about 10 ns, so a body
/// made of literals costs the pass at most about 10 µs on top of what the
/// set alone costs.
const MAX_REPORTS: usize = 1024;

/// How many parts of a long value the literal pass walks side by side.
const LANES: usize = 4;

/// The length from which a value is walked in [`LANES`] parts.
const LANES_FROM: usize = 512;

/// The compiled lists: what `Waf` asks about a request's targets.
pub(crate) struct Signatures {
    /// Every pattern at once, for a set with no literal pass.
    set: RegexSet,
    literals: Option<Literals>,
}

/// The literal pass: the literals of every pattern in one automaton, and
/// each pattern on its own for the ones whose literal is found.
struct Literals {
    automaton: DFA,
    /// The automaton's unanchored start.
    start: StateID,
    /// The pattern each literal (by its index in the automaton) is one of.
    patterns_of: Vec<usize>,
    each: Vec<Regex>,
    /// Each pattern for the joined buffer, where it can be asked there
    /// (`^` and `$` at each line's ends: [`joined_regex`]).
    joined: Vec<Option<Regex>>,
}

/// A request's targets: the short ones (path, arguments, form fields, JSON
/// strings) joined in one buffer, one a line; the long ones (the body's
/// bytes, as read and as sent) apart, never copied.
#[derive(Default)]
pub(crate) struct Targets<'a> {
    joined: Vec<u8>,
    spans: Vec<(usize, usize)>,
    apart: Vec<&'a [u8]>,
}

impl<'a> Targets<'a> {
    pub(crate) fn push(&mut self, value: &[u8]) {
        let start = self.joined.len();
        self.joined.extend_from_slice(value);
        self.spans.push((start, self.joined.len()));
        self.joined.push(b'\n');
    }

    pub(crate) fn push_apart(&mut self, value: &'a [u8]) {
        self.apart.push(value);
    }

    fn short(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, e)| &self.joined[s..e])
    }

    fn each(&self) -> impl Iterator<Item = &[u8]> {
        self.short().chain(self.apart.iter().copied())
    }
}

impl Signatures {
    pub(crate) fn new(patterns: &[&str]) -> Result<Signatures, String> {
        let set = RegexSetBuilder::new(patterns)
            .unicode(false)
            .size_limit(REGEX_SIZE_LIMIT * 8)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Signatures {
            set,
            literals: Literals::new(patterns),
        })
    }

    /// Whether a literal pass runs before any regex.
    #[cfg(test)]
    pub(crate) fn has_literal_pass(&self) -> bool {
        self.literals.is_some()
    }

    /// Calls `hit` with every pattern that matches some target (a pattern
    /// may come more than once).
    pub(crate) fn matches(&self, targets: &Targets, mut hit: impl FnMut(usize)) {
        let Some(literals) = &self.literals else {
            return self.set_over(targets.each(), hit);
        };
        // A request made of literals (a body of `;` over and over) ends
        // the pass early: the set then reads every target, as without one.
        let Some(candidates) = literals.candidates(targets) else {
            return self.set_over(targets.each(), hit);
        };
        let mut short_may_match = false;
        for p in candidates
            .iter()
            .enumerate()
            .filter_map(|(p, &c)| c.then_some(p))
        {
            // One search of the joined buffer: no match there, no match
            // in any of its targets.
            short_may_match |= literals.joined[p]
                .as_ref()
                .is_none_or(|joined| joined.is_match(&targets.joined));
            if targets
                .apart
                .iter()
                .any(|value| literals.each[p].is_match(value))
            {
                hit(p);
            }
        }
        // A match there may span two targets: the set reads each one, and
        // its verdict is the target's own.
        if short_may_match {
            self.set_over(targets.short(), hit);
        }
    }

    fn set_over<'t>(&self, values: impl Iterator<Item = &'t [u8]>, mut hit: impl FnMut(usize)) {
        for value in values {
            // Most values match nothing: a yes-or-no search first, which
            // allocates nothing; which patterns only on a match.
            if self.set.is_match(value) {
                self.set.matches(value).iter().for_each(&mut hit);
            }
        }
    }

    /// The patterns the literal pass would run for `targets` (every one,
    /// without a literal pass).
    #[cfg(test)]
    pub(crate) fn candidates(&self, targets: &Targets) -> Vec<bool> {
        match self.literals.as_ref().and_then(|l| l.candidates(targets)) {
            Some(found) => found,
            None => vec![true; self.set.len()],
        }
    }
}

impl Literals {
    /// The pass, where every pattern has literals its matches start with
    /// (`None`: some pattern has none, or the automaton cannot be built).
    fn new(patterns: &[&str]) -> Option<Literals> {
        let mut by_literal: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut each = Vec::with_capacity(patterns.len());
        let mut joined = Vec::with_capacity(patterns.len());
        for (p, pattern) in patterns.iter().enumerate() {
            by_literal.extend(prefix_literals(pattern)?.into_iter().map(|l| (l, p)));
            each.push(regex(pattern, false).ok()?);
            joined.push(joined_regex(pattern));
        }
        let (literals, patterns_of): (Vec<Vec<u8>>, Vec<usize>) = by_literal.into_iter().unzip();
        let automaton = DFA::builder()
            .ascii_case_insensitive(true)
            // Every literal found, overlapping ones too (a leftmost find
            // could hide a shorter literal inside it), in one walk: a body
            // made of one literal over and over costs a report a byte, not
            // a new search a byte.
            .match_kind(MatchKind::Standard)
            // The literals start with a dozen common bytes (letters among
            // them): no prefilter skips ahead of the walk.
            .prefilter(false)
            .build(&literals)
            .ok()?;
        let start = automaton.start_state(Anchored::No).ok()?;
        Some(Literals {
            automaton,
            start,
            patterns_of,
            each,
            joined,
        })
    }

    /// Which patterns have a literal somewhere in the targets; `None` past
    /// [`MAX_REPORTS`] literals found.
    fn candidates(&self, targets: &Targets) -> Option<Vec<bool>> {
        let mut found = Found {
            marks: vec![false; self.each.len()],
            left: self.each.len(),
            reports: 0,
        };
        for hay in std::iter::once(targets.joined.as_slice()).chain(targets.apart.iter().copied()) {
            match self.walk(hay, &mut found) {
                Ok(()) => {}
                Err(Stop::Every) => break,
                Err(Stop::TooMany) => return None,
            }
        }
        Some(found.marks)
    }

    /// Walks `hay`, marking the patterns of every literal found in it: in
    /// [`LANES`] parts side by side from [`LANES_FROM`] bytes.
    fn walk(&self, hay: &[u8], found: &mut Found) -> Result<(), Stop> {
        let dfa = &self.automaton;
        if hay.len() < LANES_FROM {
            return self.walk_from(hay, self.start, found);
        }
        // Part k is [k * part, (k + 1) * part), walked on for `reach` bytes
        // more: a literal that starts in it (at most `reach` + 1 bytes
        // long) ends in its walk. A literal in two walks is reported twice:
        // that only counts toward MAX_REPORTS sooner.
        let part = hay.len() / LANES;
        let reach = dfa.max_pattern_len().saturating_sub(1);
        let bounds: [(usize, usize); LANES] = std::array::from_fn(|k| {
            let to = if k + 1 == LANES {
                hay.len()
            } else {
                ((k + 1) * part + reach).min(hay.len())
            };
            (k * part, to)
        });
        let common = bounds
            .iter()
            .map(|&(from, to)| to - from)
            .min()
            .unwrap_or(0);
        let mut sids = [self.start; LANES];
        for i in 0..common {
            for (sid, &(from, _)) in sids.iter_mut().zip(&bounds) {
                *sid = dfa.next_state(Anchored::No, *sid, hay[from + i]);
                if dfa.is_special(*sid) {
                    self.report(*sid, found)?;
                }
            }
        }
        for (sid, &(from, to)) in sids.into_iter().zip(&bounds) {
            self.walk_from(&hay[from + common..to], sid, found)?;
        }
        Ok(())
    }

    /// Walks `hay` a byte at a time from state `sid`.
    fn walk_from(&self, hay: &[u8], mut sid: StateID, found: &mut Found) -> Result<(), Stop> {
        let dfa = &self.automaton;
        for &b in hay {
            sid = dfa.next_state(Anchored::No, sid, b);
            if dfa.is_special(sid) {
                self.report(sid, found)?;
            }
        }
        Ok(())
    }

    /// Marks the patterns of the literals that end where the walk reached
    /// state `sid` (a special state: a match, or one that reports none).
    fn report(&self, sid: StateID, found: &mut Found) -> Result<(), Stop> {
        let dfa = &self.automaton;
        if !dfa.is_match(sid) {
            return Ok(());
        }
        for i in 0..dfa.match_len(sid) {
            found.reports += 1;
            if found.reports > MAX_REPORTS {
                return Err(Stop::TooMany);
            }
            let p = self.patterns_of[dfa.match_pattern(sid, i).as_usize()];
            if !found.marks[p] {
                found.marks[p] = true;
                found.left -= 1;
                if found.left == 0 {
                    return Err(Stop::Every);
                }
            }
        }
        Ok(())
    }
}

/// The literal pass so far: the patterns a literal of which was found, how
/// many are left, and how many literals were reported.
struct Found {
    marks: Vec<bool>,
    left: usize,
    reports: usize,
}

/// Why a walk stopped early: every pattern has a literal found, or the
/// request found more than [`MAX_REPORTS`].
enum Stop {
    Every,
    TooMany,
}

fn regex(pattern: &str, multi_line: bool) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .multi_line(multi_line)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// `pattern` for the joined buffer: with `^` and `$` at every line's ends,
/// each target (its own line) reads there as it reads alone. Inside a
/// target the bytes are the same; at its ends, the line break beside it
/// is, to `^`, `$` and to `\b` or `\B` (a byte that is no word's), what
/// the end of the text is. So a match in a target is a match in the
/// buffer. `None` for a pattern with `\A` or `\z` (they hold only at the
/// buffer's ends) or a CRLF anchor, which is asked target by target.
fn joined_regex(pattern: &str) -> Option<Regex> {
    use regex_syntax::hir::Look;
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .multi_line(true)
        .build()
        .parse(pattern)
        .ok()?;
    // `\A` and `\z`, and (should a pattern ever have them: the
    // portability check refuses `(?R)`) CRLF anchors, which a target's
    // `\r` before the joined buffer's `\n` would fail.
    let looks = hir.properties().look_set();
    if [Look::Start, Look::End, Look::StartCRLF, Look::EndCRLF]
        .into_iter()
        .any(|l| looks.contains(l))
    {
        return None;
    }
    regex(pattern, true).ok()
}

/// The literals every match of `pattern` starts with, lower-cased (the
/// automaton folds ASCII case); `None` where there is no such finite set,
/// or it holds the empty string (a match could start anywhere).
fn prefix_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    // The syntax the regex crate compiles, in the same mode (bytes, no
    // Unicode), so the literals are those of the regex that runs.
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    if literals.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    let mut lower: Vec<Vec<u8>> = literals
        .iter()
        .map(|l| l.as_bytes().to_ascii_lowercase())
        .collect();
    lower.sort_unstable();
    lower.dedup();
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_lists_all_have_a_literal_pass() {
        let lists = crate::signature_lists();
        let mut names: Vec<&String> = lists.keys().collect();
        names.sort();
        for name in names {
            let patterns: Vec<&str> = lists[name].iter().map(String::as_str).collect();
            for p in &patterns {
                assert!(
                    prefix_literals(p).is_some(),
                    "{name}: {p} has no prefix literals"
                );
            }
            assert!(Signatures::new(&patterns).unwrap().has_literal_pass());
        }
    }

    #[test]
    fn a_pattern_held_to_the_texts_ends_is_not_asked_of_the_joined_buffer() {
        assert!(joined_regex("\\Aadmin\\z").is_none());
        assert!(joined_regex("(?-m)^admin").is_none());
        assert!(joined_regex("^admin$").is_some());
        assert!(joined_regex("(?R)\\r$").is_none());
        let s = Signatures::new(&["\\Aadmin\\z", "(^|/)\\.\\.(/|$)"]).unwrap();
        let mut t = Targets::default();
        t.push(b"x");
        t.push(b"admin");
        t.push(b"..");
        let mut hits = Vec::new();
        s.matches(&t, |p| hits.push(p));
        assert_eq!(hits, vec![0, 1]);
    }

    #[test]
    fn a_request_made_of_literals_is_read_by_the_set() {
        let s = Signatures::new(&["(?i);\\s*drop\\s+table", "(?i)<script", "(?i)union"]).unwrap();
        let semicolons = b"; ".repeat(MAX_REPORTS + 1);
        let mut t = Targets::default();
        t.push(b"a");
        t.push(b"<SCRIPT>");
        t.push_apart(&semicolons);
        // Past the reports, every pattern is the set's to read.
        assert_eq!(s.candidates(&t), vec![true, true, true]);
        let mut hits = Vec::new();
        s.matches(&t, |p| hits.push(p));
        assert_eq!(hits, vec![1]);
    }

    #[test]
    fn a_pattern_a_match_can_start_anywhere_turns_the_pass_off() {
        assert_eq!(prefix_literals("[a-z]+x"), None);
        assert_eq!(prefix_literals("a?b?"), None);
        let s = Signatures::new(&["(?i)<script", "\\w+=\\d"]).unwrap();
        assert!(!s.has_literal_pass());
    }

    #[test]
    fn the_literals_fold_case_and_look_through_assertions() {
        assert_eq!(
            prefix_literals("(?i)\\bunion\\b"),
            Some(vec![b"union".to_vec()])
        );
        // `^` matches the empty string here: ".." alone is one of them.
        let dots = prefix_literals(r"(^|[/\\])\.\.([/\\]|$)").unwrap();
        assert!(dots.contains(&b"..".to_vec()), "{dots:?}");
    }

    #[test]
    fn a_literal_is_looked_for_within_each_target_in_any_case() {
        let s = Signatures::new(&["(?i)<script\\b"]).unwrap();
        let mut t = Targets::default();
        t.push(b"a<scr");
        t.push(b"ipt b");
        assert_eq!(s.candidates(&t), vec![false]);
        let mut t = Targets::default();
        t.push(b"x<scri");
        t.push(b"pt");
        t.push(b"<sCrIpT");
        let mut hits = Vec::new();
        s.matches(&t, |p| hits.push(p));
        assert_eq!(hits, vec![0]);
    }

    /// The literal pass never changes a verdict: over targets made of the
    /// shipped patterns' pieces, in any case, split anywhere, the patterns
    /// found are those the set finds in each target.
    mod against_the_set {
        use proptest::prelude::*;

        use super::*;

        const PIECES: &[&str] = &[
            "union",
            "select",
            " ",
            "  ",
            "'",
            "\"",
            "or",
            "and",
            "1",
            "=",
            "1=1",
            "<script",
            "<",
            ">",
            "script",
            "..",
            "/",
            "\\",
            "%2e",
            "%2E",
            "etc",
            "/etc/passwd",
            "c:\\windows\\",
            "on",
            "error",
            "load",
            "=",
            "javascript",
            ":",
            "sleep",
            "(",
            ";",
            "drop",
            "table",
            "information_schema",
            "<svg",
            "<iframe",
            "\n",
            "\t",
            "a",
            "Z",
            "_",
            "0",
            "&",
            "+",
            "benchmark",
            "pg_sleep",
            "mouseover",
            "hosts",
            "embed",
            "object",
            "delete from",
        ];

        fn every_list() -> Vec<&'static str> {
            let lists = crate::signature_lists();
            let mut names: Vec<&String> = lists.keys().collect();
            names.sort();
            names
                .into_iter()
                .flat_map(|n| lists[n].iter().map(String::as_str))
                .collect()
        }

        fn target() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec((0..PIECES.len(), any::<bool>(), any::<u8>()), 0..12).prop_map(
                |parts| {
                    let mut out = Vec::new();
                    for (i, upper, byte) in parts {
                        let piece = PIECES[i].as_bytes();
                        if byte > 240 {
                            out.push(byte);
                        } else if upper {
                            out.extend(piece.to_ascii_uppercase());
                        } else {
                            out.extend_from_slice(piece);
                        }
                    }
                    out
                },
            )
        }

        /// The lists with their literal pass, and the same set without.
        fn with_and_without(patterns: &[&str]) -> (Signatures, Signatures) {
            let with = Signatures::new(patterns).unwrap();
            let without = Signatures {
                set: with.set.clone(),
                literals: None,
            };
            (with, without)
        }

        /// Short values joined, long ones apart, as the WAF builds them.
        fn targets_of<'a>(short: &[Vec<u8>], long: &'a [Vec<u8>]) -> Targets<'a> {
            let mut targets = Targets::default();
            for t in short {
                targets.push(t);
            }
            for t in long {
                targets.push_apart(t);
            }
            targets
        }

        fn found(s: &Signatures, targets: &Targets) -> Vec<usize> {
            let mut hits = Vec::new();
            s.matches(targets, |p| hits.push(p));
            hits.sort_unstable();
            hits.dedup();
            hits
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn the_same_patterns_match(
                short in prop::collection::vec(target(), 0..6),
                long in prop::collection::vec(target(), 0..2),
            ) {
                let patterns = every_list();
                let (with, without) = with_and_without(&patterns);
                prop_assert!(with.literals.is_some());
                let targets = targets_of(&short, &long);
                prop_assert_eq!(found(&with, &targets), found(&without, &targets));
            }
        }

        /// A long value: pieces apart in runs of a byte no literal has,
        /// so that they fall anywhere in it, at its parts' bounds too.
        fn long_target() -> impl Strategy<Value = Vec<u8>> {
            (
                prop::collection::vec((0..PIECES.len(), any::<bool>(), 0usize..300), 1..24),
                0usize..LANES_FROM,
            )
                .prop_map(|(parts, pad)| {
                    let mut out = vec![b'x'; pad];
                    for (i, upper, gap) in parts {
                        out.extend(std::iter::repeat_n(b'x', gap));
                        let piece = PIECES[i].as_bytes();
                        if upper {
                            out.extend(piece.to_ascii_uppercase());
                        } else {
                            out.extend_from_slice(piece);
                        }
                    }
                    out.resize(out.len().max(LANES_FROM), b'x');
                    out
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]
            #[test]
            fn long_values_walked_in_parts_find_every_literal(
                short in prop::collection::vec(target(), 0..3),
                long in prop::collection::vec(long_target(), 1..3),
            ) {
                let patterns = every_list();
                let (with, without) = with_and_without(&patterns);
                let targets = targets_of(&short, &long);
                prop_assert_eq!(found(&with, &targets), found(&without, &targets));
                let mut values: Vec<&[u8]> = vec![&targets.joined];
                values.extend(long.iter().map(Vec::as_slice));
                if let Some(c) = with.literals.as_ref().unwrap().candidates(&targets) {
                    prop_assert_eq!(c, super::naive_candidates(&patterns, &values));
                }
            }
        }
    }

    /// The patterns a literal of which occurs in a value, one literal
    /// and one position at a time.
    fn naive_candidates(patterns: &[&str], values: &[&[u8]]) -> Vec<bool> {
        patterns
            .iter()
            .map(|p| {
                let literals = prefix_literals(p).unwrap();
                values.iter().any(|v| {
                    literals
                        .iter()
                        .any(|l| v.windows(l.len()).any(|w| w.eq_ignore_ascii_case(l)))
                })
            })
            .collect()
    }

    #[test]
    fn a_literal_across_the_bounds_of_a_long_values_parts_is_found() {
        let lists = crate::signature_lists();
        let patterns: Vec<&str> = lists["sql_injection"].iter().map(String::as_str).collect();
        let s = Signatures::new(&patterns).unwrap();
        let literals = s.literals.as_ref().unwrap();
        let len = 4 * LANES_FROM + 3;
        let part = len / LANES;
        for (p, pattern) in patterns.iter().enumerate() {
            for literal in prefix_literals(pattern).unwrap() {
                for bound in [part, 2 * part, 3 * part, len - literal.len()] {
                    for at in bound.saturating_sub(literal.len() + 1)..=bound + 1 {
                        if at + literal.len() > len {
                            continue;
                        }
                        let mut value = vec![b'x'; len];
                        value[at..at + literal.len()].copy_from_slice(&literal);
                        let mut t = Targets::default();
                        t.push_apart(&value);
                        let c = literals.candidates(&t).unwrap();
                        assert!(c[p], "{literal:?} at {at} of {len} not found");
                        assert_eq!(
                            c,
                            naive_candidates(&patterns, &[&value]),
                            "{literal:?} at {at}"
                        );
                    }
                }
            }
        }
    }
}
