//! popek: a virtual machine monitor for 32-bit x86 guests.

#![forbid(unsafe_code)]

mod audit;
mod bench;
mod console;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A virtual machine monitor for 32-bit x86 guests: guest kernel code binary
/// translated, guest user code run directly, and KVM for comparison.
#[derive(Parser)]
#[command(name = "popek", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest (with no options: the embedded default guest).
    Run(run::RunArgs),
    /// List the embedded guests.
    Guests,
    /// Count a kernel's privileged and sensitive-unprivileged instructions.
    Audit(audit::AuditArgs),
    /// Run the benchmark suite: bt against kvm, QEMU TCG and native.
    Bench(bench::BenchArgs),
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        // `popek` alone means `popek run`: parse again with the subcommand so
        // every option gets clap's default, not Rust's zero.
        cli = Cli::parse_from(std::env::args_os().chain(["run".into()]));
    }
    init_tracing(cli.verbose);
    match cli.command.expect("a subcommand after the second parse") {
        Command::Run(args) => run::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Guests => {
            for g in popek_guests::GUESTS {
                let default = if g.name == popek_guests::DEFAULT {
                    " (default)"
                } else {
                    ""
                };
                println!("{:<12} {}{default}", g.name, g.summary);
            }
            ExitCode::SUCCESS
        }
    }
}
