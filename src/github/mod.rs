//! GitHub: the only module that knows GitHub's JSON. `client` talks to the REST API (reviews,
//! the sticky comment, check runs); `webhook` verifies and decodes webhook
//! deliveries.

pub mod client;
pub mod webhook;
