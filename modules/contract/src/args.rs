//! Query arguments as OpenResty's `ngx.req.get_uri_args()` gives them, so
//! that a Rust module sees exactly what its Lua twin sees.
//!
//! - arguments are separated by `&`; the first `=` splits name and value;
//! - an argument without `=` has no value (Lua: `true`), shown here as `None`;
//! - names and values are percent-decoded once, `+` becomes a space;
//! - an argument whose name is empty is skipped.
//!
//! Every argument is visited, however many there are.

/// Calls `f(name, value)` for every argument of `query`, in order.
pub fn for_each_arg(query: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    let mut name = Vec::new();
    let mut value = Vec::new();
    for part in query.split(|&b| b == b'&') {
        let (n, v) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], Some(&part[i + 1..])),
            None => (part, None),
        };
        if n.is_empty() {
            continue;
        }
        name.clear();
        decode_component(n, &mut name);
        match v {
            Some(v) => {
                value.clear();
                decode_component(v, &mut value);
                f(&name, Some(&value));
            }
            None => f(&name, None),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a query component once: `+` is a space, `%XX` a byte,
/// and a `%` not followed by two hex digits stays as it is.
pub fn decode_component(input: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(q: &str) -> Vec<(String, Option<String>)> {
        let mut out = vec![];
        for_each_arg(q.as_bytes(), |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                v.map(|v| String::from_utf8_lossy(v).into_owned()),
            ))
        });
        out
    }

    #[test]
    fn splits_and_decodes_once() {
        assert_eq!(
            args("a=1&b&c=x%20y+z&=skipped&d=%252e&e=a=b"),
            [
                ("a".into(), Some("1".into())),
                ("b".into(), None),
                ("c".into(), Some("x y z".into())),
                ("d".into(), Some("%2e".into())),
                ("e".into(), Some("a=b".into())),
            ]
        );
    }

    #[test]
    fn visits_every_argument() {
        let q: Vec<String> = (0..5000).map(|i| format!("k{i}=v")).collect();
        assert_eq!(args(&q.join("&")).len(), 5000);
    }
}
