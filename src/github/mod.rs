//! GitHub: the only module that knows GitHub's JSON. `webhook` verifies and decodes webhook
//! deliveries.

pub mod webhook;
