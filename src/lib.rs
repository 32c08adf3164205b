//! vuer-client (work in progress)
pub(crate) mod clock;
pub(crate) mod codec;
pub mod error;
pub mod event;
pub mod ring;
pub mod value;

pub use error::{DecodeError, EncodeError};
pub use event::{Coalesce, DynEvent, Event, RawEvent, Reliable, ServerEvent};
pub use value::Value;
