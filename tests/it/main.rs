//! Integration tests: one binary, a module per area. Inputs are real-looking config repos in
//! `testdata/`; expected outputs are committed snapshots (`RAMPART_BLESS=1` rewrites them).

mod action;
mod audit;
mod cache;
mod ci;
mod cli;
mod compile;
mod example;
mod formats;
mod fuzz;
mod git;
mod git_http;
mod github_client;
mod github_fake;
mod hostile;
mod impact;
mod init;
mod invalid;
mod kube;
mod kube_server;
mod observe;
mod plan;
mod policy;
mod prometheus;
mod rollback;
mod rollout;
mod serve;
mod slo_exporter;
mod supply;
mod support;
mod webhooks;
