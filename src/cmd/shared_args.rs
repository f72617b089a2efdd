//! Options more than one subcommand takes, defined once so that their name, parser, default
//! and help agree wherever they appear.

use srcgrab_fetcher::net::DownloadOptions;
use srcgrab_formats::signature::PublicKey;

#[derive(clap::Args)]
pub struct TrustedKeys {
    /// A key (as in Nix's `trusted-public-keys`, e.g. `cache.nixos.org-1:6NCH…`) whose
    /// signature makes a binary carried in from outside (in a bundle, on a disk) acceptable;
    /// repeatable. Binaries no such key signed are not imported.
    #[arg(long = "trusted-public-key", value_name = "KEY", value_parser = crate::cli_values::parse_public_key)]
    pub keys: Vec<PublicKey>,
}

#[derive(clap::Args)]
pub struct Lookups {
    /// The most narinfo look-ups (and other small requests) in flight per host, apart from
    /// transfers: the count starts at 32 and doubles while answers come faster for it.
    #[arg(long, alias = "queries", default_value_t = DownloadOptions::default().max_lookups_per_host, value_name = "N")]
    pub max_lookups_per_host: usize,
}
