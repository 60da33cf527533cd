//! Names of temporary entries: `<prefix><host>-<pid>-<random>`, so that their owner can be
//! told from the name alone.

/// The prefix of every temporary file this crate creates beside its target.
pub const TMP_PREFIX: &str = ".tmp-";

/// This machine's host name (`/proc/sys/kernel/hostname`, `/etc/hostname`, `$HOSTNAME`),
/// reduced to `[A-Za-z0-9.]` (so it never contains the `-` that separates the name's
/// parts); `localhost` when unknown.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// `<prefix><host>-<pid>-`: a temporary-name prefix that identifies this process.
pub fn temp_prefix(prefix: &str) -> String {
    format!("{prefix}{}-{}-", host_name(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_host_and_pid() {
        let p = temp_prefix(TMP_PREFIX);
        let rest = p.strip_prefix(TMP_PREFIX).unwrap();
        let parts: Vec<&str> = rest.split('-').collect();
        assert_eq!(parts.len(), 3, "{p}");
        assert_eq!(parts[0], host_name());
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2], "");
        assert!(!host_name().contains('-'));
    }
}
