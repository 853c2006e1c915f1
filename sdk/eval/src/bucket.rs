//! Percentage bucketing: a deterministic map from `(salt, value)` to a bucket in
//! `[0, 100_000)`.
//!
//! The definition is part of Vexil's wire contract: every implementation (this crate, the
//! load generator, SDKs in other languages) must reproduce it bit for bit, so it is pinned by
//! fixed test vectors below and in the shared fixtures.
//!
//! ```text
//! seed   = xxh3_64(utf8(salt))                      (seed 0, default secret)
//! hash   = xxh3_64_with_seed(bytes(value), seed)
//! bucket = (hash * 100_000) >> 64                   (128-bit product: "fastrange")
//! ```
//!
//! `bytes(value)` is the UTF-8 of a string, or the shortest decimal form of an integer
//! (`-12`, `0`, `18446744073709551615`); other JSON values do not bucket.

use serde_json::{Number, Value};
use vexil_schema::WEIGHT_SCALE;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The number of buckets: bucket values are in `[0, BUCKETS)`. Equal to
/// [`WEIGHT_SCALE`], so a rollout weight `w` covers exactly `w` buckets.
pub const BUCKETS: u32 = WEIGHT_SCALE;

/// Integers up to this magnitude stored as JSON floats (`5.0`) bucket like the integer:
/// beyond 2^53 a float no longer identifies one integer.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// The bucket of `value` under `salt`, in `[0, 100_000)`.
///
/// ```
/// assert_eq!(vexil_eval::bucket("salt", "user-1"), 48_166);
/// ```
pub fn bucket(salt: &str, value: &str) -> u32 {
    bucket_bytes(salt_seed(salt), value.as_bytes())
}

/// The hash seed derived from a salt: `xxh3_64(salt)`. Compiled flags keep it so that
/// evaluation hashes the value only.
pub fn salt_seed(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The salt a flag or segment actually buckets with: its own salt, or its key when the salt
/// is empty, so that two salt-less flags never split contexts identically.
pub fn effective_salt<'a>(salt: &'a str, key: &'a str) -> &'a str {
    if salt.is_empty() { key } else { salt }
}

/// The bucket of raw value bytes under a seed from [`salt_seed`].
pub fn bucket_bytes(seed: u64, bytes: &[u8]) -> u32 {
    fastrange(xxh3_64_with_seed(bytes, seed))
}

/// Maps a 64-bit hash uniformly onto `[0, BUCKETS)` without division.
fn fastrange(hash: u64) -> u32 {
    // The product is < 2^64 * 100_000, so the high 64 bits are < 100_000.
    ((u128::from(hash) * u128::from(BUCKETS)) >> 64) as u32
}

/// The bucket of a JSON attribute value, or `None` if its type does not bucket (see the
/// module docs). Allocation-free: integers are formatted into a stack buffer.
pub fn bucket_json(seed: u64, value: &Value) -> Option<u32> {
    match value {
        Value::String(s) => Some(bucket_bytes(seed, s.as_bytes())),
        Value::Number(n) => {
            let mut buf = [0u8; 21];
            integer_decimal(n, &mut buf).map(|digits| bucket_bytes(seed, digits))
        }
        _ => None,
    }
}

/// Writes the decimal form of an integral JSON number into `buf`, returning the digits;
/// `None` for a number with a fractional part or a float beyond ±2^53.
fn integer_decimal<'b>(n: &Number, buf: &'b mut [u8; 21]) -> Option<&'b [u8]> {
    let (negative, magnitude) = if let Some(u) = n.as_u64() {
        (false, u)
    } else if let Some(i) = n.as_i64() {
        (i < 0, i.unsigned_abs())
    } else {
        let f = n.as_f64()?;
        if f.fract() != 0.0 || f.abs() > MAX_EXACT_FLOAT_INT {
            return None;
        }
        // Exact: |f| ≤ 2^53 and integral. `-0.0` formats as `0`.
        (f < 0.0, f.abs() as u64)
    };
    let mut pos = buf.len();
    let mut m = magnitude;
    loop {
        pos -= 1;
        buf[pos] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if negative {
        pos -= 1;
        buf[pos] = b'-';
    }
    Some(&buf[pos..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Computed independently with Python's `xxhash` package (see
    /// `schema/testdata/eval/bucketing.py`); these must never change.
    #[test]
    fn pinned_vectors() {
        assert_eq!(salt_seed(""), 3_244_421_341_483_603_138);
        assert_eq!(salt_seed("salt"), 11_229_228_473_275_659_907);
        assert_eq!(bucket("", "user-1"), 571);
        assert_eq!(bucket("salt", "user-1"), 48_166);
        assert_eq!(bucket("salt", "user-2"), 95_710);
        assert_eq!(bucket("new-checkout", "alice"), 42_414);
        assert_eq!(bucket("x", ""), 87_443);
    }

    #[test]
    fn fastrange_covers_the_range() {
        assert_eq!(fastrange(0), 0);
        assert_eq!(fastrange(u64::MAX), BUCKETS - 1);
        assert_eq!(fastrange(1 << 63), BUCKETS / 2);
    }

    #[test]
    fn integers_bucket_by_their_decimal_string() {
        let seed = salt_seed("s");
        for (v, s) in [
            (json!(42), "42"),
            (json!(-7), "-7"),
            (json!(0), "0"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(5.0), "5"),
            (json!(-0.0), "0"),
            (json!(9_007_199_254_740_992.0_f64), "9007199254740992"),
        ] {
            assert_eq!(
                bucket_json(seed, &v),
                Some(bucket_bytes(seed, s.as_bytes())),
                "{v}"
            );
        }
        for v in [
            json!(1.5),
            json!(1e300),
            json!(true),
            json!(null),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(bucket_json(seed, &v), None, "{v}");
        }
    }

    #[test]
    fn empty_salt_falls_back_to_the_key() {
        assert_eq!(effective_salt("", "flag"), "flag");
        assert_eq!(effective_salt("s", "flag"), "s");
    }
}
