use super::*;
use graft_contract::OwnedRequest;
use serde_json::json;

fn eval(cond: serde_json::Value, req: &OwnedRequest) -> bool {
    Condition::parse(&cond).unwrap().eval(&Subject::new(req))
}

fn req() -> OwnedRequest {
    let mut r = OwnedRequest::get(
        "shop.example",
        "/admin/users?id=1%27%20OR%201=1&flag&a=x&a=y",
    );
    r.headers
        .push((b"User-Agent".to_vec(), b"curl/8.0".to_vec()));
    r.headers
        .push((b"X-Forwarded-For".to_vec(), b"203.0.113.9".to_vec()));
    r.client = Some("10.1.2.3".parse().unwrap());
    r
}

#[test]
fn fields_and_operators() {
    let r = req();
    let yes = [
        json!({ "field": "path", "op": "prefix", "value": "/admin" }),
        json!({ "field": "method", "op": "in", "values": ["GET", "HEAD"] }),
        json!({ "field": "host", "op": "equals", "value": "shop.example" }),
        json!({ "field": "arg:id", "op": "contains", "value": "' OR 1=1" }),
        json!({ "field": "arg:a", "op": "equals", "value": "y" }),
        json!({ "field": "arg:flag", "op": "equals", "value": "" }),
        json!({ "field": "args", "op": "equals", "value": "flag" }),
        json!({ "field": "header:user-agent", "op": "regex", "value": "(?i)^CURL/" }),
        json!({ "field": "headers", "op": "in_prefix", "values": ["203.0.113.0/24"] }),
        json!({ "field": "client", "op": "in_prefix", "values": ["10.0.0.0/8", "2001:db8::/32"] }),
        json!({ "field": "client", "op": "equals", "value": "10.1.2.3" }),
        json!({ "field": "query", "op": "contains", "value": "%27" }),
    ];
    for c in yes {
        assert!(eval(c.clone(), &r), "{c}");
    }
    let no = [
        json!({ "field": "path", "op": "equals", "value": "/admin" }),
        json!({ "field": "arg:missing", "op": "equals", "value": "" }),
        json!({ "field": "client", "op": "in_prefix", "values": ["10.1.3.0/24"] }),
        json!({ "field": "header:x-none", "op": "contains", "value": "" }),
    ];
    for c in no {
        assert!(!eval(c.clone(), &r), "{c}");
    }
}

#[test]
fn combinators() {
    let r = req();
    let p = json!({ "field": "path", "op": "prefix", "value": "/admin" });
    let q = json!({ "field": "method", "op": "equals", "value": "POST" });
    assert!(!eval(json!({ "all": [p, q] }), &r));
    assert!(eval(json!({ "any": [p, q] }), &r));
    assert!(eval(json!({ "all": [p, { "not": q }] }), &r));
    assert!(eval(json!({ "all": [] }), &r));
    assert!(!eval(json!({ "any": [] }), &r));
}

#[test]
fn errors_name_the_place() {
    let cases = [
        (
            json!({ "any": [ { "field": "path", "op": "like", "value": "x" } ] }),
            "any[0].op",
        ),
        (
            json!({ "not": { "field": "cookie", "op": "equals", "value": "x" } }),
            "not.field",
        ),
        (
            json!({ "field": "path", "op": "regex", "value": "(unclosed" }),
            "value",
        ),
        (
            json!({ "field": "client", "op": "in_prefix", "values": ["10.0.0.0/8", "300.1.1.1"] }),
            "values[1]",
        ),
        (json!({ "field": "path", "op": "equals" }), "value"),
        (
            json!({ "field": "path", "op": "in", "values": "x" }),
            "values",
        ),
        (
            json!({ "field": "path", "op": "equals", "value": "x", "extra": 1 }),
            "extra",
        ),
    ];
    for (c, field) in cases {
        let e = Condition::parse(&c).unwrap_err();
        assert_eq!(e.field, field, "{c}: {e}");
    }
    let mut deep = json!({ "field": "path", "op": "equals", "value": "x" });
    for _ in 0..20 {
        deep = json!({ "not": deep });
    }
    assert!(Condition::parse(&deep)
        .unwrap_err()
        .message
        .contains("nested deeper"));
}

#[test]
fn a_payload_past_the_hundredth_argument_is_seen() {
    let mut target = String::from("/?");
    for i in 0..500 {
        target.push_str(&format!("k{i}=v&"));
    }
    target.push_str("last=%3Cscript%3E");
    let r = OwnedRequest::get("a", &target);
    assert!(eval(
        json!({ "field": "args", "op": "contains", "value": "<script>" }),
        &r
    ));
}

/// Patterns the Rust engine and PCRE (10.42, no UTF, as nginx's `ngx.re`
/// runs it) read alike: they load.
#[test]
fn portable_patterns_load() {
    let portable = [
        "[]-]",
        "[^]-]",
        "[]a-]",
        "(?i)^/ADMIN",
        "\\d{3,}",
        "^/a/b$",
        "[<>]",
        "<script>",
        "(?i)select.+from",
        "\\bunion\\b[\\s\\S]{0,100}?\\bselect\\b",
        "\\Bx\\b",
        "\\A/x\\z",
        "\\x41\\x{41}\\x{7F}\\xFF[\\x80-\\xFF]",
        "[[:alpha:]][[:^digit:]](?i)[[:upper:]]",
        "[]a][^]a][a-][-a][\\]\\-\\^\\[]",
        "[\\--z][a\\--]",
        "\\%\\&\\~\\#\\ \\-\\_\\:\\/\\=",
        "(?<name>a)(?P<other_1>b)",
        "(?s).(?U)a+(?-i)b(?i-s:c)(?-m)d(?-x)e",
        "a{2}b{2,}c{2,3}?d*?e+?f??",
        "é(?:é)+",
        "(?:^)*a(?:$)+",
        "[a&][a~]",
        "\\a\\f\\t\\n\\r",
        "x}",
    ];
    for p in portable {
        compile_regex(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

/// Each construct the two engines read differently, or that only one of
/// them accepts, is refused at load with a message that names it.
#[test]
fn unportable_patterns_are_refused_naming_the_construct() {
    let cases = [
        // Rust accepts, PCRE reads otherwise or refuses.
        ("\\<zz", "`\\<`"),
        ("zz\\>", "`\\>`"),
        ("\\b{start}x", "`\\b{start}`"),
        ("x\\b{end}", "`\\b{end}`"),
        ("\\b{start-half}x", "`\\b{start-half}`"),
        ("x\\b{end-half}", "`\\b{end-half}`"),
        ("a\\vb", "`\\v`"),
        ("[\\v]", "`\\v`"),
        ("\\x{FF}", "`\\x{FF}`"),
        ("\\x{100}", "`\\x{100}`"),
        ("[\\x{80}-\\x{FF}]", "`\\x{80}`"),
        ("\\u0041", "`\\u0041`"),
        ("\\u{41}", "`\\u{41}`"),
        ("\\U00000041", "`\\U00000041`"),
        ("(?m)^a$", "`m`"),
        ("(?im:a)", "`m`"),
        ("(?x)a b", "`x`"),
        ("(?x)[ a]", "`x`"),
        ("(?u)a", "`u`"),
        ("(?-u)a", "`u`"),
        ("(?R)a", "`R`"),
        ("(?R)", "`R`"),
        ("a++", "`++`"),
        ("a*+", "`*+`"),
        ("a?+", "`?+`"),
        ("a{2}+", "`{2}+`"),
        ("a**", "`**`"),
        ("a{2}{3}", "`{2}{3}`"),
        ("^*", "`^*`"),
        ("a$+", "`$+`"),
        ("\\b?a", "`\\b?`"),
        ("a{1, 2}", "`{1, 2}`"),
        ("a{ 2}", "`{ 2}`"),
        ("(?:){65536}", "`{65536}`"),
        ("(?<a.b>x)", "`a.b`"),
        ("(?<a[1]>x)", "`a[1]`"),
        (
            "(?<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa>x)",
            "`aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`",
        ),
        ("(?<é>x)", "`é`"),
        ("[--z]", "`--`"),
        ("[--(]", "`--`"),
        ("x[^--z]", "`--`"),
        ("é{2}", "`é{2}`"),
        ("xé?y", "`é?`"),
        ("[é]", "`é`"),
        ("[^a-é]", "`é`"),
        ("[a[b]]", "`[b]`"),
        ("[[.a.]]", "`[.a.]`"),
        ("[[=a=]]", "`[=a=]`"),
        ("[[:foo:]]", "`[:foo:]`"),
        ("[[:<:]]a", "`[:<:]`"),
        ("a[[:>:]]", "`[:>:]`"),
        ("[a&&b]", "`&&`"),
        ("[a-z&&[^b]]", "`&&`"),
        ("[a--b]", "`--`"),
        ("[a~~b]", "`~~`"),
        ("[%--]", "`--`"),
        ("[]-@]", "`]-`"),
        ("[A-[]", "`-[`"),
        ("[\x01-[:0unCt:]]x]", "`-[`"),
        ("[A-[:alpha:]]", "`-[`"),
        ("[]-a]", "`]-`"),
        ("x[^]-a]", "`]-`"),
        ("\\\u{b}?[]-@\0\0\0\0#ff]+", "`]-`"),
        ("[:alpha:]", "`[:alpha:]`"),
        ("x[.a.]", "`[.a.]`"),
        ("[=a=]", "`[=a=]`"),
        ("\\pL", "`\\pL`"),
        ("\\p{L}", "`\\p{L}`"),
        ("\\PL", "`\\PL`"),
        ("\\p{Latin}", "`\\p{Latin}`"),
        ("[\\pL]", "`\\pL`"),
        // PCRE accepts, Rust refuses: the message says what PCRE meant.
        ("(a)\\1", "`\\1`"),
        ("\\0", "`\\0`"),
        ("\\012", "`\\0`"),
        ("\\o{101}", "`\\o`"),
        ("(?=a)", "`(?=`"),
        ("(?!a)", "`(?!`"),
        ("(?<=a)b", "`(?<=`"),
        ("(?<!a)b", "`(?<!`"),
        ("(?>a)", "`(?>`"),
        ("(?|a)", "`(?|`"),
        ("(?#x)a", "`(?#`"),
        ("(?'n'a)", "`(?'`"),
        ("(?1)", "`(?1`"),
        ("(?+1)", "`(?+`"),
        ("(?-1)", "`(?-1`"),
        ("(?&n)", "`(?&`"),
        ("(?P=n)", "`(?P=`"),
        ("(?P>n)", "`(?P>`"),
        ("(?(1)a|b)", "`(?(`"),
        ("(?C1)a", "`(?C`"),
        ("(?n)a", "`n`"),
        ("(?in)a", "`n`"),
        ("(?J)a", "`J`"),
        ("(?^)a", "`(?^`"),
        ("\\Q.\\E", "`\\Q`"),
        ("\\E", "`\\E`"),
        ("\\K", "`\\K`"),
        ("\\R", "`\\R`"),
        ("\\h", "`\\h`"),
        ("[\\h]", "`\\h`"),
        ("\\H", "`\\H`"),
        ("\\V", "`\\V`"),
        ("a\\Z", "`\\Z`"),
        ("\\e", "`\\e`"),
        ("\\cA", "`\\c`"),
        ("\\N", "`\\N`"),
        ("\\C", "`\\C`"),
        ("\\X", "`\\X`"),
        ("\\G", "`\\G`"),
        ("(a)\\g1", "`\\g`"),
        ("(?<a>x)\\k<a>", "`\\k`"),
        ("a{,3}", "`{,3}`"),
        ("a{", "`{`"),
        ("a{x}", "`{x}`"),
        ("a{1,x}", "`{1,x}`"),
        ("{", "`{`"),
        ("{2}", "`{`"),
        ("(*UTF)a", "`(*`"),
        ("(*CR)a", "`(*`"),
        ("[\\b]", "`\\b`"),
        ("(?)a", "`(?)`"),
    ];
    for (p, construct) in cases {
        let e = compile_regex(p).expect_err(p);
        assert!(
            e.contains(construct),
            "{p}: the message does not name {construct}: {e}"
        );
    }
}

#[test]
fn a_refused_pattern_names_the_condition_field() {
    let e = Condition::parse(&json!({ "any": [
        { "field": "path", "op": "equals", "value": "/" },
        { "field": "path", "op": "regex", "value": "\\<zz" },
    ] }))
    .unwrap_err();
    assert_eq!(e.field, "any[1].value");
    assert!(e.message.contains("`\\<`"), "{e}");
}

/// Without multi-line mode, Rust's `$` is the very end of the value; PCRE's
/// also matches before a final newline (a decoded path can end with one).
/// The Lua side gets `\z`, PCRE's very end, for each `$` that is an anchor.
#[test]
fn dollar_is_handed_to_pcre_as_the_very_end() {
    let cases = [
        ("^/admin$", "^/admin\\z"),
        ("a$|b$", "a\\z|b\\z"),
        ("(x$)", "(x\\z)"),
        ("(?:$)+", "(?:\\z)+"),
        ("a\\$b", "a\\$b"),
        ("[$]", "[$]"),
        ("[\\]$]$", "[\\]$]\\z"),
        ("\\\\$", "\\\\\\z"),
        ("é$", "é\\z"),
        ("no anchor", "no anchor"),
        // Not a pattern that loads: handed over as it is.
        ("(?m)^a$", "(?m)^a$"),
    ];
    for (p, pcre) in cases {
        assert_eq!(pcre_pattern(p), pcre, "{p}");
    }
    let re = compile_regex("^/admin$").unwrap();
    assert!(re.is_match(b"/admin"));
    assert!(!re.is_match(b"/admin\n"));
}

#[test]
fn lua_conditions_get_the_pcre_patterns() {
    let config = json!({ "rules": [
        { "id": "a", "when": { "any": [
            { "field": "path", "op": "regex", "value": "^/admin$" },
            { "not": { "field": "arg:x", "op": "regex", "value": "[$]$" } },
            { "field": "path", "op": "equals", "value": "/x$" },
        ] } },
        { "id": "b" },
    ], "other": "$" });
    let lua = lua_conditions_in(&config, "rules");
    assert_eq!(
        lua,
        json!({ "rules": [
            { "id": "a", "when": { "any": [
                { "field": "path", "op": "regex", "value": "^/admin\\z" },
                { "not": { "field": "arg:x", "op": "regex", "value": "[$]\\z" } },
                { "field": "path", "op": "equals", "value": "/x$" },
            ] } },
            { "id": "b" },
        ], "other": "$" })
    );
    assert_eq!(
        lua_condition(&json!({ "field": "host", "op": "regex", "value": "^a$" })),
        json!({ "field": "host", "op": "regex", "value": "^a\\z" })
    );
}

/// The cache of compiled expressions keeps what the last load used: a
/// pattern no later load compiled is dropped when that load ends.
#[test]
fn the_regex_cache_keeps_what_the_last_load_used() {
    let (kept, dropped) = ("^/graft-cache-kept$", "^/graft-cache-dropped$");
    compile_regex(kept).unwrap();
    compile_regex(dropped).unwrap();
    end_regex_load();
    compile_regex(kept).unwrap();
    end_regex_load();
    let cache = regex_cache();
    assert!(cache.by_pattern.contains_key(kept));
    assert!(!cache.by_pattern.contains_key(dropped));
}
