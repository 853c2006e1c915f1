//! Compiling a clause: checking every operand with the schema's parsers and precomputing
//! what evaluation needs.

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::RegexSetBuilder;
use semver::Version;
use serde_json::Value;
use vexil_schema::model::{Clause, Operator};
use vexil_schema::operand::{
    REGEX_SIZE_LIMIT, compile_regex, parse_date_millis, parse_number, parse_semver,
};

use super::{
    Attr, AttrNames, CClause, InSet, Matcher, NumKey, SCAN_LIMIT, Substrings, Test, num_key,
};
use crate::malformed::Malformation;
use crate::needle::{FewSubstrings, Needle};
use crate::table::HashIndex;

/// Compiles a clause. `attrs` collects attribute names; `segment_ref(key)` returns the
/// owner's reference index for a segment key.
pub(crate) fn compile_clause(
    clause: &Clause,
    path: &str,
    attrs: &mut AttrNames,
    mut segment_ref: impl FnMut(&str) -> u32,
) -> Result<CClause, Malformation> {
    let bad = |i: usize, reason: &str| Malformation::Operand {
        path: format!("{path}.values[{i}]"),
        reason: reason.to_owned(),
    };
    let values = &clause.values;
    let strings = || -> Result<Box<[Box<str>]>, Malformation> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(Box::from)
                    .ok_or_else(|| bad(i, "must be a string"))
            })
            .collect()
    };
    let numbers = || -> Result<Vec<f64>, Malformation> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| parse_number(v).ok_or_else(|| bad(i, "must be a number")))
            .collect()
    };
    let dates = || -> Result<Vec<i64>, Malformation> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                parse_date_millis(v)
                    .ok_or_else(|| bad(i, "must be an RFC 3339 date-time or epoch milliseconds"))
            })
            .collect()
    };
    let semvers = || -> Result<Vec<Version>, Malformation> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .and_then(parse_semver)
                    .ok_or_else(|| bad(i, "must be a semantic version string"))
            })
            .collect()
    };

    let op = clause.op;
    let attr = if op == Operator::SegmentMatch {
        Attr::Key // unused
    } else {
        attrs
            .intern(&clause.attribute)
            .ok_or_else(|| Malformation::Operand {
                path: format!("{path}.attribute"),
                reason: "more than 65535 distinct attributes".to_owned(),
            })?
    };
    let empty = values.is_empty() && !matches!(op, Operator::Exists | Operator::SegmentMatch);
    let test = match op {
        Operator::In => Test::In(compile_in(values, &bad)?),
        Operator::StartsWith => Test::StartsWith(needles(&strings()?)),
        Operator::EndsWith => Test::EndsWith(needles(&strings()?)),
        Operator::Contains => Test::Contains(substrings(strings()?)),
        Operator::Matches => Test::Matches(compile_matcher(values, &bad)?),
        Operator::Lt | Operator::Lte => {
            let max = numbers()?.into_iter().fold(f64::NEG_INFINITY, f64::max);
            let hi = if op == Operator::Lt {
                max.next_down()
            } else {
                max
            };
            Test::Range(f64::NEG_INFINITY, hi)
        }
        Operator::Gt | Operator::Gte => {
            let min = numbers()?.into_iter().fold(f64::INFINITY, f64::min);
            let lo = if op == Operator::Gt {
                min.next_up()
            } else {
                min
            };
            Test::Range(lo, f64::INFINITY)
        }
        Operator::Before => Test::Before(dates()?.into_iter().max().unwrap_or(i64::MIN)),
        Operator::After => Test::After(dates()?.into_iter().min().unwrap_or(i64::MAX)),
        Operator::SemverEq => Test::SemverEq(semvers()?.into()),
        Operator::SemverLt => match semvers()?.into_iter().max_by(|a, b| a.cmp_precedence(b)) {
            Some(v) => Test::SemverLt(v),
            None => Test::Never,
        },
        Operator::SemverGt => match semvers()?.into_iter().min_by(|a, b| a.cmp_precedence(b)) {
            Some(v) => Test::SemverGt(v),
            None => Test::Never,
        },
        Operator::SegmentMatch => {
            Test::Segments(strings()?.iter().map(|k| segment_ref(k)).collect())
        }
        Operator::Exists => Test::Exists,
    };
    Ok(CClause {
        attr,
        negate: clause.negate,
        test: if empty { Test::Never } else { test },
    })
}

/// Compiled `contains` operands: up to 64 bytes in all, one Shift-And state (the common case:
/// a few short substrings); more, one aho-corasick automaton (a full DFA up to 4 KiB of
/// operands, else the crate's more compact choice); the operands themselves if no automaton
/// can be built (it has size limits).
fn substrings(strings: Box<[Box<str>]>) -> Substrings {
    if strings.iter().any(|s| s.is_empty()) {
        return Substrings::Always;
    }
    if let Some(few) = FewSubstrings::new(&strings) {
        return Substrings::Few(few);
    }
    let total: usize = strings.iter().map(|s| s.len()).sum();
    let kind = (total <= 4096).then_some(AhoCorasickKind::DFA);
    match AhoCorasick::builder()
        .kind(kind)
        .build(strings.iter().map(|s| s.as_bytes()))
    {
        Ok(ac) => Substrings::Automaton(ac),
        Err(_) => Substrings::Each(strings),
    }
}

fn needles(strings: &[Box<str>]) -> Box<[Needle]> {
    strings.iter().map(|s| Needle::new(s)).collect()
}

fn compile_in(
    values: &[Value],
    bad: &impl Fn(usize, &str) -> Malformation,
) -> Result<InSet, Malformation> {
    let mut strings = Vec::new();
    let mut ints = Vec::new();
    let mut floats = Vec::new();
    let mut bools = 0u8;
    for (i, v) in values.iter().enumerate() {
        match v {
            Value::String(s) => strings.push(Needle::new(s)),
            Value::Number(n) => match num_key(n) {
                Some(NumKey::Int(x)) => ints.push(x),
                Some(NumKey::Float(f)) => floats.push(f),
                None => return Err(bad(i, "is not a finite number")),
            },
            Value::Bool(b) => bools |= 1 << u8::from(*b),
            _ => return Err(bad(i, "must be a string, number or boolean")),
        }
    }
    ints.sort_unstable();
    ints.dedup();
    floats.sort_unstable_by(f64::total_cmp);
    floats.dedup();
    let strings: Box<[Needle]> = strings.into();
    let string_index = if strings.len() > SCAN_LIMIT {
        HashIndex::build(strings.len(), |p| strings[p as usize].as_str())
    } else {
        HashIndex::default()
    };
    Ok(InSet {
        strings,
        string_index,
        ints: ints.into(),
        floats: floats.into(),
        bools,
    })
}

fn compile_matcher(
    values: &[Value],
    bad: &impl Fn(usize, &str) -> Malformation,
) -> Result<Matcher, Malformation> {
    let mut patterns = Vec::with_capacity(values.len());
    let mut regexes = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let p = v.as_str().ok_or_else(|| bad(i, "must be a string"))?;
        regexes.push(compile_regex(p).map_err(|e| bad(i, &e.to_string()))?);
        patterns.push(p);
    }
    if regexes.len() == 1 {
        return Ok(Matcher::Each(regexes.into()));
    }
    // Each pattern was accepted on its own; one automaton for all is faster when it fits.
    match RegexSetBuilder::new(&patterns)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(set) => Ok(Matcher::Set(set)),
        Err(_) => Ok(Matcher::Each(regexes.into())),
    }
}
