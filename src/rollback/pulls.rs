//! [`PullRequests`] through the GitHub client: the client is async, `land` is not, so the
//! client lives with a current-thread runtime of its own (as `cli/serve.rs` does for pull
//! request identities) and each call blocks on it.

use super::PullRequests;
use crate::github::client::{Auth, Client};
use anyhow::Context;

/// Pull requests on one GitHub repository.
pub struct GitHubPulls {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl GitHubPulls {
    /// A client for `repository` (`OWNER/REPO`) at `api_url`, on a runtime of its own (the
    /// client's connections belong to the runtime that made them). Must not be called from
    /// within an async runtime.
    pub fn connect(api_url: &str, auth: Auth, repository: &str) -> anyhow::Result<GitHubPulls> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let client = rt
            .block_on(Client::new(api_url, auth, repository))
            .with_context(|| format!("connecting to GitHub for {repository}"))?;
        Ok(GitHubPulls { rt, client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl PullRequests for GitHubPulls {
    fn open(&self, head: &str, base: &str, title: &str, body: &str) -> anyhow::Result<(u64, String)> {
        Ok(self
            .rt
            .block_on(self.client.create_pull_request(head, base, title, body))?)
    }

    fn comment(&self, number: u64, body: &str) -> anyhow::Result<()> {
        Ok(self.rt.block_on(self.client.comment(number, body))?)
    }
}
