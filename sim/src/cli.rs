//! `faultline sim`: run scenarios, single seeds and sweeps.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("sim: not implemented yet")
}
