//! Data plane: TFTP and HTTP servers that hand nodes the files `boot` laid out.
//!
//! Both only read files, never render or fetch: everything a node asks for is on disk before
//! it powers on. Both confine client-supplied names to their root the same way
//! ([`confine`]), including symlinks that resolve elsewhere.

pub mod confine;
mod file_reader;
pub mod http;
pub mod tftp;
