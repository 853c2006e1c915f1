#!/usr/bin/env python3
"""An independent implementation of Vexil's bucketing, for computing fixture expectations.

    seed   = xxh3_64(utf8(salt))
    hash   = xxh3_64_with_seed(utf8(value), seed)
    bucket = (hash * 100000) >> 64          # in [0, 100000)

Integers bucket by their decimal string. Run directly to print the pinned test vectors that
`sdk/eval/src/bucket.rs` asserts.
"""

import xxhash

BUCKETS = 100_000


def salt_seed(salt: str) -> int:
    return xxhash.xxh3_64_intdigest(salt.encode("utf-8"))


def bucket(salt: str, value: str) -> int:
    h = xxhash.xxh3_64_intdigest(value.encode("utf-8"), seed=salt_seed(salt))
    return (h * BUCKETS) >> 64


def rollout_variation(weights, b: int) -> int:
    """The variation for bucket `b`: walk (variation, weight) pairs cumulatively."""
    end = 0
    for variation, weight in weights:
        end += weight
        if weight > 0 and b < end:
            return variation
    raise ValueError("weights do not cover bucket %d" % b)


if __name__ == "__main__":
    for salt, value in [("", "user-1"), ("salt", "user-1"), ("salt", "user-2"),
                        ("new-checkout", "alice"), ("x", "")]:
        print("seed(%r) = %d  bucket(%r, %r) = %d"
              % (salt, salt_seed(salt), salt, value, bucket(salt, value)))
