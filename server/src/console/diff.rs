//! A line diff of two texts (pretty-printed JSON documents), shown side by side with the
//! unchanged stretches folded. Pure: no I/O.

use maud::{Markup, html};

/// One line of the side-by-side view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// The same on both sides.
    Same(&'a str),
    /// Only on the left (removed).
    Removed(&'a str),
    /// Only on the right (added).
    Added(&'a str),
}

/// Largest middle section (after common prefix and suffix) diffed line by line; beyond it
/// the whole middle is shown as replaced (the dynamic programme is quadratic).
const MAX_CELLS: usize = 4_000_000;

/// The lines of `old` and `new` as a sequence of unchanged, removed and added lines (a
/// longest-common-subsequence diff).
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<Line<'a>> = a[..prefix].iter().map(|l| Line::Same(l)).collect();
    if am.len().saturating_mul(bm.len()) > MAX_CELLS {
        out.extend(am.iter().map(|l| Line::Removed(l)));
        out.extend(bm.iter().map(|l| Line::Added(l)));
    } else {
        // lcs[i][j]: length of the LCS of am[i..] and bm[j..].
        let (n, m) = (am.len(), bm.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                out.push(Line::Same(am[i]));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
                // Removals before additions on ties: a replaced line reads "- old, + new".
                out.push(Line::Removed(am[i]));
                i += 1;
            } else {
                out.push(Line::Added(bm[j]));
                j += 1;
            }
        }
    }
    out.extend(a[a.len() - suffix..].iter().map(|l| Line::Same(l)));
    out
}

/// Whether the diff changes anything.
pub fn changes(lines: &[Line<'_>]) -> bool {
    lines.iter().any(|l| !matches!(l, Line::Same(_)))
}

/// A row of the side-by-side view, or a run of folded unchanged lines.
enum Item<'a> {
    Row(Option<&'a str>, Option<&'a str>, bool),
    Fold(usize),
}

/// Lines of context kept around each change.
const CONTEXT: usize = 3;

/// The side-by-side view: removed lines on the left facing the added lines that replace
/// them on the right; unchanged stretches longer than the context are folded.
pub fn side_by_side(left_title: &str, right_title: &str, old: &str, new: &str) -> Markup {
    let diff = lines(old, new);
    // Pair up each block of removals with the additions that follow it.
    let mut rows: Vec<(Option<&str>, Option<&str>, bool)> = Vec::new();
    let mut k = 0;
    while k < diff.len() {
        match diff[k] {
            Line::Same(l) => {
                rows.push((Some(l), Some(l), false));
                k += 1;
            }
            _ => {
                let mut removed = Vec::new();
                let mut added = Vec::new();
                while k < diff.len() && !matches!(diff[k], Line::Same(_)) {
                    match diff[k] {
                        Line::Removed(l) => removed.push(l),
                        Line::Added(l) => added.push(l),
                        Line::Same(_) => {}
                    }
                    k += 1;
                }
                for r in 0..removed.len().max(added.len()) {
                    rows.push((removed.get(r).copied(), added.get(r).copied(), true));
                }
            }
        }
    }
    let near_change = |i: usize| {
        let lo = i.saturating_sub(CONTEXT);
        let hi = (i + CONTEXT + 1).min(rows.len());
        rows[lo..hi].iter().any(|r| r.2)
    };
    let changed = rows.iter().any(|r| r.2);
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut folded = 0usize;
    for (i, &(l, r, change)) in rows.iter().enumerate() {
        if changed && !near_change(i) {
            folded += 1;
            continue;
        }
        if folded > 0 {
            items.push(Item::Fold(folded));
            folded = 0;
        }
        items.push(Item::Row(l, r, change));
    }
    if folded > 0 {
        items.push(Item::Fold(folded));
    }
    html! {
        div.diff role="group" aria-label=(format!("Changes from {left_title} to {right_title}")) {
            div.h { (left_title) }
            div.h { (right_title) }
            @if !changed {
                div.l { "(no changes)" }
                div.l { "(no changes)" }
            }
            @for item in &items {
                @match item {
                    Item::Fold(n) => {
                        div.l.gap { "… " (n) " unchanged lines" }
                        div.l.gap { "" }
                    }
                    Item::Row(l, r, change) => {
                        div.l.del[*change && l.is_some()].gap[*change && l.is_none()] {
                            @if *change && l.is_some() { span.sr { "- " } } (l.unwrap_or(""))
                        }
                        div.l.add[*change && r.is_some()].gap[*change && r.is_none()] {
                            @if *change && r.is_some() { span.sr { "+ " } } (r.unwrap_or(""))
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_in_the_middle_is_a_removal_and_an_addition() {
        let d = lines("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(
            d,
            vec![
                Line::Same("a"),
                Line::Removed("b"),
                Line::Added("x"),
                Line::Same("c")
            ]
        );
        assert!(changes(&d));
        assert!(!changes(&lines("a\nb", "a\nb")));
    }

    #[test]
    fn insertions_and_deletions_keep_the_common_lines() {
        let d = lines("a\nb\nc\nd", "a\nc\nd\ne");
        assert_eq!(
            d,
            vec![
                Line::Same("a"),
                Line::Removed("b"),
                Line::Same("c"),
                Line::Same("d"),
                Line::Added("e")
            ]
        );
    }

    #[test]
    fn the_view_folds_long_unchanged_stretches() {
        let old: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 25\n", "line twenty-five\n");
        let html = side_by_side("v1", "v2", &old, &new).into_string();
        assert!(html.contains("line twenty-five"));
        assert!(html.contains("unchanged lines"));
        assert!(!html.contains("line 3\n") && !html.contains(">line 3<"));
    }
}
