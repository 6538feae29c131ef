//! The processor architecture a bundle's programs and stub are built for.

use std::fmt;

/// A bundle's architecture, recorded in its metadata (version 6) as the ELF
/// `e_machine` value of its programs. Bundles of versions 3 to 5 are
/// x86-64 (the default): no other stub existed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture tote bundles for, in the order it lists them.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The ELF `e_machine` value (EM_X86_64, EM_AARCH64).
    pub const fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The architecture of ELF `e_machine` value `m`, if tote knows it.
    pub const fn from_elf_machine(m: u16) -> Option<Arch> {
        match m {
            62 => Some(Arch::X86_64),
            183 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The name tote shows and `--arch` takes: the kernel's (`uname -m`).
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The name OCI images (`architecture`) and Nomad (`${attr.cpu.arch}`)
    /// use: Go's `GOARCH`.
    pub const fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Either spelling of either name (`x86_64`, `x86-64`, `amd64`,
    /// `aarch64`, `arm64`).
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The architecture this code was compiled for, if tote bundles for it.
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_machines_round_trip() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_elf_machine(a.elf_machine()), Some(a));
            assert_eq!(Arch::parse(a.name()), Some(a));
            assert_eq!(Arch::parse(a.go_name()), Some(a));
        }
        assert_eq!(Arch::from_elf_machine(40), None, "32-bit ARM is not one of them");
        assert_eq!(Arch::parse("arm"), None);
    }
}
