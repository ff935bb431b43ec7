//! The HTTP wire: our server face and the upstream client. Knows nothing of associations.
pub mod admin;
pub mod audit;
pub mod auth;
pub mod client;
pub mod listen;
pub mod multipart;
pub mod origin;
pub mod server;
