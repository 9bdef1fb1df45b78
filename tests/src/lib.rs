//! Shared helpers live in `tests/tests/common`; this library is intentionally empty of code.
