//! Data plane: TFTP and HTTP servers that hand nodes the files `boot` laid out.
//!
//! Both only read files, never render or fetch: everything a node asks for is on disk before
//! it powers on. Both confine client-supplied names to their root the same way
//! ([`confine`]), including symlinks that resolve elsewhere, and neither ever serves a file
//! still being written (its temporary name is refused).
//!
//! Hostile clients: the HTTP listeners (boot HTTP here, the API in `service`) run
//! [`listener`]'s accept loop with a connection cap and deadlines; [`limits`] raises the
//! open-file limit and shares it out so no listener can exhaust it for the others; TFTP caps
//! its transfers.

pub mod confine;
pub mod http;
pub mod limits;
pub mod listener;
pub mod tftp;
