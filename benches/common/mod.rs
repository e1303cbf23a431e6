//! What the benches share.

use std::process::Command;

/// `program`, without the environment's `TAMPINES_` settings: `TAMPINES_GRANULARITY_MS` set in
/// the shell turned a row of defaults into another.
pub fn bare(program: &str) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TAMPINES_") {
            command.env_remove(name);
        }
    }
    command
}
