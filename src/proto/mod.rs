//! The IMAP wire protocol as far as a proxy needs it, with no I/O: framing of both directions,
//! classification of commands and responses, and the few encoders the proxy's own answers use.

pub mod args;
pub mod command;
pub mod encode;
pub mod framer;
pub mod keyword;
pub mod lexer;
pub mod line_end;
pub mod literal;
pub mod message;
#[doc(hidden)]
pub mod reference;
pub mod replay;
pub mod response;
