//! Relaying frames between a client and its backend after the upgrade.
//!
//! [`state`] is the sans-io core: for each direction it decides, from the
//! bytes alone, what passes, what is held and which rule a frame breaks
//! (contract, "Behaviour on the wire").

pub mod state;
