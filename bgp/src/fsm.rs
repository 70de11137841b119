//! The RFC 4271 section 8 session state machine (to be written).
