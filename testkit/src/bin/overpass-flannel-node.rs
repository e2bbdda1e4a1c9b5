//! `overpass-flannel-node`: the Flannel-style node agent of the test bed
//! ([`overpass_testkit::flannel`]) as a process, for trying things by hand
//! next to `overpass demo --hold`. Prints `ready` and each applied event.

use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    spec: overpass_testkit::flannel::AgentSpec,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in rx {
            println!("{line}");
        }
    });
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    if let Err(e) = rt.block_on(overpass_testkit::flannel::run(cli.spec, tx, stopped)) {
        eprintln!("overpass-flannel-node: error: {e:#}");
        std::process::exit(1);
    }
}
