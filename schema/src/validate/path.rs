//! The error collector: tracks the path of the field being checked and gathers errors.
//!
//! Paths are kept as a stack of segments and rendered to a string only when an error is
//! recorded, so checking a valid document allocates nothing for paths.

use std::fmt::Write as _;

use super::{FieldError, ValidationErrors, rules};
use crate::limits::MAX_REPORTED_ERRORS;

/// One step of a path: a field name or an array index.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Field(&'static str),
    Index(usize),
}

/// Gathers the errors of one document, each at the path being checked when it was found.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    path: Vec<Seg>,
    errors: Vec<FieldError>,
    /// Errors found past [`MAX_REPORTED_ERRORS`], counted but not kept.
    omitted: usize,
}

impl Collector {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `field` appended to the path.
    pub(crate) fn field<R>(&mut self, field: &'static str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Field(field));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` with `[index]` appended to the path.
    pub(crate) fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Index(index));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Records an error at the current path.
    pub(crate) fn error(&mut self, rule: &'static str, message: impl Into<String>) {
        if self.errors.len() >= MAX_REPORTED_ERRORS {
            self.omitted += 1;
            return;
        }
        let path = self.render();
        self.errors.push(FieldError {
            path,
            rule,
            message: message.into(),
        });
    }

    /// Records an error at `field` under the current path.
    pub(crate) fn error_at(
        &mut self,
        field: &'static str,
        rule: &'static str,
        message: impl Into<String>,
    ) {
        self.field(field, |c| c.error(rule, message));
    }

    /// Checks that `s` has at most `max` characters; `what` names it in the message.
    /// Returns whether it passed.
    pub(crate) fn max_len(&mut self, s: &str, max: usize, what: &str) -> bool {
        // Byte length bounds character count from above: skip counting short strings.
        if s.len() <= max {
            return true;
        }
        let chars = s.chars().count();
        if chars <= max {
            return true;
        }
        self.error(
            rules::LIMIT_EXCEEDED,
            format!("{what} may be at most {max} characters long, got {chars}"),
        );
        false
    }

    /// Checks that a list has at most `max` entries; `what` names them in the message.
    /// Returns whether it passed.
    pub(crate) fn max_count(&mut self, n: usize, max: usize, what: &str) -> bool {
        if n <= max {
            return true;
        }
        self.error(
            rules::LIMIT_EXCEEDED,
            format!("at most {max} {what} are allowed, got {n}"),
        );
        false
    }

    /// Ends collection: `Ok(value)` if no error was found.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ValidationErrors> {
        let Self {
            mut errors,
            omitted,
            ..
        } = self;
        if errors.is_empty() {
            return Ok(value);
        }
        if omitted > 0 {
            errors.push(FieldError {
                path: String::new(),
                rule: rules::TOO_MANY_ERRORS,
                message: format!(
                    "{omitted} further errors were found and left out; fix the ones listed and retry"
                ),
            });
        }
        Err(ValidationErrors { errors })
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_paths() {
        let mut c = Collector::new();
        c.field("rules", |c| {
            c.index(0, |c| {
                c.field("clauses", |c| {
                    c.index(1, |c| c.error_at("values", "r", "m"));
                })
            })
        });
        c.index(2, |c| c.error("r2", "m2"));
        c.error("r3", "m3");
        let errs = c.finish(()).unwrap_err().errors;
        assert_eq!(errs[0].path, "rules[0].clauses[1].values");
        assert_eq!(errs[1].path, "[2]");
        assert_eq!(errs[2].path, "");
    }

    #[test]
    fn caps_the_number_of_errors_kept() {
        let mut c = Collector::new();
        for _ in 0..MAX_REPORTED_ERRORS + 7 {
            c.error("r", "m");
        }
        let errs = c.finish(()).unwrap_err().errors;
        assert_eq!(errs.len(), MAX_REPORTED_ERRORS + 1);
        let last = errs.last().unwrap();
        assert_eq!(last.rule, rules::TOO_MANY_ERRORS);
        assert!(last.message.starts_with("7 further"), "{}", last.message);
    }

    #[test]
    fn length_and_count_limits() {
        let mut c = Collector::new();
        assert!(c.max_len("ééé", 3, "a name"));
        assert!(!c.max_len("éééé", 3, "a name"));
        assert!(c.max_count(3, 3, "rules"));
        assert!(!c.max_count(4, 3, "rules"));
        let errs = c.finish(()).unwrap_err().errors;
        assert_eq!(errs[0].rule, rules::LIMIT_EXCEEDED);
        assert_eq!(
            errs[0].message,
            "a name may be at most 3 characters long, got 4"
        );
        assert_eq!(errs[1].message, "at most 3 rules are allowed, got 4");
    }

    #[test]
    fn no_errors_is_ok() {
        assert_eq!(Collector::new().finish(5), Ok(5));
    }
}
