//! What std's prelude would bring, for the modules of this crate on wasm32.

// Natively std's prelude wins method lookups, so this one looks unused.
#[allow(unused_imports)]
pub use alloc::borrow::ToOwned;
#[allow(unused_imports)]
pub use alloc::string::{String, ToString};
pub use alloc::vec::Vec;
