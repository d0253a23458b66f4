//! Which last-level caches the CPUs otwatch may run on sit under, from Linux's sysfs.
//!
//! With `--workers N` every packet and every PDU's observation crosses between threads. Between
//! two cores that share a last-level cache that costs about 30 ns a cache line; between cores
//! that share none (two CCXs of an EPYC, two sockets) several times that, and two workers then
//! ran at about 0.6x one (benches/README.md, session 20). Nothing is pinned here: the operator
//! chooses the cores (`taskset`, systemd's `CPUAffinity=`); otwatch only says when the choice
//! spans several caches.

use std::collections::BTreeMap;
use std::path::Path;

/// The CPUs of `allowed` grouped by the last-level cache they share, as sysfs under `sys`
/// (normally `/sys`) describes it; each group sorted, the groups in the order of their lowest
/// CPU. A CPU whose caches cannot be read is left out, so an unreadable sysfs gives no groups.
pub fn last_level_groups(sys: &Path, allowed: &[usize]) -> Vec<Vec<usize>> {
    let mut cpus = allowed.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for cpu in cpus {
        if let Some(shared) = last_level_shared(sys, cpu) {
            groups.entry(shared).or_default().push(cpu);
        }
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().collect();
    out.sort();
    out
}

/// The CPUs sharing `cpu`'s highest-level cache (its `shared_cpu_list`).
fn last_level_shared(sys: &Path, cpu: usize) -> Option<Vec<usize>> {
    let dir = sys.join(format!("devices/system/cpu/cpu{cpu}/cache"));
    let mut best: Option<(u32, Vec<usize>)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("index") {
            continue;
        }
        let path = entry.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).ok();
        let Some(level) = read("level").and_then(|l| l.trim().parse::<u32>().ok()) else {
            continue;
        };
        // An instruction cache is no place for data to cross.
        if read("type").is_some_and(|t| t.trim() == "Instruction") {
            continue;
        }
        let Some(shared) = read("shared_cpu_list").and_then(|l| parse_cpu_list(l.trim())) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| level > *b) {
            best = Some((level, shared));
        }
    }
    best.map(|(_, shared)| shared)
}

/// A CPU list as Linux writes it: `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    if list.is_empty() {
        return Some(cpus);
    }
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The CPUs this process may run on, as Linux lists them (`Cpus_allowed_list` of
/// /proc/self/status: any number of CPUs, where a fixed-size mask for sched_getaffinity is
/// refused beyond 1024); none where that cannot be read.
pub fn allowed() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
        })
        .unwrap_or_default()
}

/// Groups listed in a warning at most.
const LISTED_GROUPS: usize = 8;

/// A warning for `workers` workers when the allowed CPUs sit under several last-level caches
/// (`groups`, from [`last_level_groups`]); none for one worker or one cache, nor when no cache
/// is shared by two CPUs (what some virtual machines show: no layout to go by). It suggests the
/// largest group, and fewer workers when that group has no CPU for each worker and the reader.
pub fn spread_warning(workers: usize, groups: &[Vec<usize>]) -> Option<String> {
    if workers < 2 || groups.len() < 2 || groups.iter().all(|g| g.len() < 2) {
        return None;
    }
    let text = |g: &[usize]| {
        let mut runs: Vec<String> = Vec::new();
        let mut i = 0;
        while i < g.len() {
            let mut j = i;
            while j + 1 < g.len() && g[j + 1] == g[j] + 1 {
                j += 1;
            }
            runs.push(if j > i {
                format!("{}-{}", g[i], g[j])
            } else {
                g[i].to_string()
            });
            i = j + 1;
        }
        runs.join(",")
    };
    let mut listed: Vec<String> = groups.iter().take(LISTED_GROUPS).map(|g| text(g)).collect();
    if groups.len() > LISTED_GROUPS {
        listed.push("...".into());
    }
    // The largest group; of equal ones, the first.
    let largest = groups.iter().fold(
        &groups[0],
        |best, g| if g.len() > best.len() { g } else { best },
    );
    let fewer = if largest.len() > workers {
        String::new()
    } else {
        let n = largest.len().saturating_sub(1).max(1);
        format!(
            ", with at most {n} worker{} (the reader is a thread too)",
            if n == 1 { "" } else { "s" }
        )
    };
    Some(format!(
        "the {workers} workers may run on CPUs under {} last-level caches ({}): every packet \
         crosses between threads, far slower between caches; run otwatch on one cache's CPUs \
         (e.g. taskset -c {}, or CPUAffinity= under systemd){fewer}",
        groups.len(),
        listed.join(" | "),
        text(largest),
    ))
}

/// [`spread_warning`] for this process on this machine (`/sys`); nothing is read for one
/// worker.
pub fn spread_warning_here(workers: usize) -> Option<String> {
    if workers < 2 {
        return None;
    }
    spread_warning(workers, &last_level_groups(Path::new("/sys"), &allowed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("otwatch-cpus-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A sysfs with `cpus` CPUs: caches L1d, L1i, L2 of their own, and an L3 shared by each
    /// `per_l3` consecutive CPUs.
    fn fake_sys(name: &str, cpus: usize, per_l3: usize) -> Scratch {
        let dir = Scratch::new(name);
        for cpu in 0..cpus {
            let base = dir
                .path()
                .join(format!("devices/system/cpu/cpu{cpu}/cache"));
            let first = cpu / per_l3 * per_l3;
            let l3 = format!("{}-{}", first, first + per_l3 - 1);
            for (i, (level, kind, shared)) in [
                (1, "Data", cpu.to_string()),
                (1, "Instruction", cpu.to_string()),
                (2, "Unified", cpu.to_string()),
                (3, "Unified", l3),
            ]
            .into_iter()
            .enumerate()
            {
                let d = base.join(format!("index{i}"));
                std::fs::create_dir_all(&d).expect("cache dir");
                std::fs::write(d.join("level"), format!("{level}\n")).expect("level");
                std::fs::write(d.join("type"), format!("{kind}\n")).expect("type");
                std::fs::write(d.join("shared_cpu_list"), format!("{shared}\n")).expect("list");
            }
        }
        dir
    }

    #[test]
    fn cpus_are_grouped_by_the_cache_they_share() {
        let sys = fake_sys("two", 8, 4);
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(
            last_level_groups(sys.path(), &all),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]
        );
        // Pinned within one cache: one group, no warning.
        let one = last_level_groups(sys.path(), &[1, 2]);
        assert_eq!(one, vec![vec![1, 2]]);
        assert_eq!(spread_warning(2, &one), None);
        // Across two: a warning that names both and suggests the larger, with fewer workers
        // (two CPUs: the reader and one worker).
        let two = last_level_groups(sys.path(), &[4, 2, 3, 2]);
        assert_eq!(two, vec![vec![2, 3], vec![4]]);
        let w = spread_warning(2, &two).expect("a warning");
        assert!(w.contains("2 last-level caches (2-3 | 4)"), "{w}");
        assert!(w.contains("taskset -c 2-3,"), "{w}");
        assert!(w.contains("at most 1 worker (the reader"), "{w}");
        // The larger group second, with room for every worker and the reader.
        let wide = last_level_groups(sys.path(), &[3, 4, 5, 6, 7]);
        let w = spread_warning(2, &wide).expect("a warning");
        assert!(w.contains("(3 | 4-7)"), "{w}");
        assert!(w.contains("taskset -c 4-7,"), "{w}");
        assert!(!w.contains("at most"), "{w}");
        // One worker hands nothing across.
        assert_eq!(spread_warning(1, &two), None);
    }

    #[test]
    fn a_machine_with_one_cache_or_no_sysfs_gives_no_warning() {
        let sys = fake_sys("one", 4, 4);
        let groups = last_level_groups(sys.path(), &[0, 1, 2, 3]);
        assert_eq!(groups.len(), 1);
        assert_eq!(spread_warning(4, &groups), None);
        let none = Scratch::new("none");
        assert!(last_level_groups(none.path(), &[0, 1]).is_empty());
        assert_eq!(spread_warning(2, &[]), None);
        // No cache shared by two CPUs: a layout that says nothing (some virtual machines).
        let alone = fake_sys("alone", 4, 1);
        let groups = last_level_groups(alone.path(), &[0, 1, 2, 3]);
        assert_eq!(groups.len(), 4);
        assert_eq!(spread_warning(2, &groups), None);
    }

    #[test]
    fn cpu_lists_parse_as_linux_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
    }

    /// This machine's own sysfs, read as the warning reads it: every allowed CPU is under some
    /// cache, once.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_machines_cpus_are_found_under_its_caches() {
        let allowed = allowed();
        if allowed.is_empty() {
            eprintln!("skipped: /proc/self/status lists no allowed CPUs here");
            return;
        }
        let groups = last_level_groups(Path::new("/sys"), &allowed);
        if groups.is_empty() {
            eprintln!("skipped: this machine's sysfs lists no caches");
            return;
        }
        let mut seen: Vec<usize> = groups.concat();
        seen.sort_unstable();
        assert_eq!(seen, allowed);
    }
}
