//! Ending a process together with everything it started: `cargo test` runs the test binaries
//! as its children, and killing cargo alone would leave a stuck test running.

use std::collections::HashMap;

/// SIGKILLs `root` and all its live descendants.
pub fn kill_tree(root: u32) {
    let family = descendants(&parent_links(), root);
    for pid in std::iter::once(root).chain(family) {
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pids come
        // from /proc and belong to processes this xtask started (or to nothing, if one has
        // exited since, which kill reports as an error we do not need).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// (pid, parent pid) of every process in /proc.
fn parent_links() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parent_of(&stat)?))
    })
    .collect()
}

/// The parent pid in a /proc/<pid>/stat line: `pid (comm) state ppid …`, where comm may hold
/// spaces and parentheses, so the fields count from the last `)`.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every pid below `root` in the parent links, parents before children.
fn descendants(links: &[(u32, u32)], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in links {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            // A pid seen twice would be a cycle; /proc cannot show one, but never loop on it.
            if child != root && !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_after_an_awkward_command_name() {
        assert_eq!(parent_of("4242 (cargo) S 17 4242 4242 0 -1"), Some(17));
        assert_eq!(parent_of("77 (a) b) (c) R 5 77 77 0 -1"), Some(5));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn finds_children_and_grandchildren_only() {
        // 10 → 11 → 12, 10 → 13; 20 is unrelated, 1 is everyone's ancestor.
        let links = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1)];
        let mut found = descendants(&links, 10);
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        assert!(descendants(&links, 12).is_empty());
    }

    #[test]
    fn kills_a_process_and_its_children() {
        // A shell whose child sleeps: both must be gone after kill_tree.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .spawn()
            .expect("sh runs");
        let root = sh.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let child = loop {
            if let Some(&c) = descendants(&parent_links(), root).first() {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sh never started sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        kill_tree(root);
        let status = sh.wait().expect("sh is our child");
        assert!(!status.success());
        // The orphaned sleep is reaped by init; wait until it is gone from /proc.
        while std::path::Path::new(&format!("/proc/{child}/stat")).exists()
            && std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep survived kill_tree"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
