//! Node input: A3 (a node rewriting its Hostinfo as fast as it can) and A4 (oversized fields).
