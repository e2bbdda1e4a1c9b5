//! The control plane, off the dataplane cores: the [`rib`] (single writer of
//! the FIB: validate, persist, publish, wait for the workers), its [`store`]
//! on disk, SIGHUP [`reload`], underlay [`neigh`]bours over netlink, and the
//! worker/port plan ([`ports`]).

pub mod attach;
pub mod cni_socket;
pub mod neigh;
pub mod ports;
pub mod reload;
pub mod rib;
pub mod sources;
pub mod store;
