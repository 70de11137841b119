//! The tokio layer and public handle (to be written).
