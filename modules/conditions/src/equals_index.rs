//! Many `equals` conditions on one field, answered with one lookup.
use std::ops::ControlFlow;

use crate::{Field, Subject};

/// A condition's field, for grouping conditions by the field they test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a>(pub(crate) &'a Field);

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
