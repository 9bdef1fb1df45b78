//! End-to-end tests live in `tests/`; what they share is the `lockstep-testkit` crate
//! (`testkit/`). This library is intentionally empty of code.
