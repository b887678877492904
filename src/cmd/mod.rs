//! Real-mode subcommands.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod groups;
pub mod produce;
pub mod quorum;
pub mod serve;
pub mod topics;

// The topic and brokers that `produce` and `consume` talk to, flattened into
// each so both spell and default the flags alike. A plain comment, not a doc
// comment: clap would take a doc comment as the subcommand's about text.
#[derive(clap::Args, Debug)]
pub struct TopicTarget {
    #[arg(long)]
    pub topic: String,
    /// Comma-separated broker addresses, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
}
