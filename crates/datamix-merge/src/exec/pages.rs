//! Page-table management of memory mappings: releasing read input ranges
//! (one `process_madvise` call on Linux, rounded to huge pages) and asking
//! for transparent huge pages. Knows mappings, addresses and ranges; must
//! not know tensors, jobs or schedules.

use std::ops::Range;

use memmap2::Mmap;
#[cfg(unix)]
use memmap2::UncheckedAdvice;

/// Drops a byte range of a read-only file mapping from this process's page
/// tables; the page cache keeps the data. Unix only (`madvise`); elsewhere
/// the pages stay mapped until the mapping is dropped.
pub(super) fn release(map: &Mmap, r: Range<usize>) {
    if r.is_empty() {
        return;
    }
    #[cfg(unix)]
    {
        // SAFETY: the mapping is a read-only file mapping, so MADV_DONTNEED
        // only drops page-table entries: later reads fault the same file
        // contents back in. Failure is harmless (memory is simply not
        // released early), so it is ignored.
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, r.start, r.len()) };
    }
    #[cfg(not(unix))]
    let _ = map;
}

/// How far [`release_all`] releases each range. Both start at the 2 MiB
/// huge page (or page, where the kernel does not use 2 MiB huge pages)
/// holding the range's start: batches read each input in file order, so what
/// lies before a range is finished. Releasing only whole huge pages matters:
/// releasing part of one splits its mapping, and every split flushes the TLBs
/// of all cores at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rounding {
    /// Up to each range's end, rounded out to a page: nothing reads on.
    Whole,
    /// Up to the start of the huge page holding each range's end, which the
    /// next batch may be reading (its faults map whole huge pages, or a few
    /// pages around the fault, never before that start); the release after
    /// that batch starts there, so nothing is skipped.
    Behind,
}

/// Drops byte ranges of read-only file mappings from this process's page
/// tables (the page cache keeps the data), rounded as `rounding` says.
///
/// On Linux one `process_madvise` call covers all of them, so that the kernel
/// (6.16 or later) flushes the other cores' TLBs once rather than once per
/// range: every flush interrupts each core running this process, and in a VM
/// every interrupt exits to the hypervisor. Releasing 8 inputs' ranges one
/// by one and splitting huge pages cost ~6 flushes per batch and made
/// releasing while merging slower than releasing between batches
/// (docs/bench-merge.md). Where the call is refused (kernels before 6.15)
/// the ranges are released one by one.
pub(super) fn release_all<'a>(
    ranges: impl IntoIterator<Item = (&'a Mmap, Range<usize>)>,
    rounding: Rounding,
) {
    #[cfg(target_os = "linux")]
    {
        /// `PIDFD_SELF` (Linux 6.15): the calling process, no pidfd to open.
        const PIDFD_SELF: libc::c_int = -10000;
        /// The most iovecs one call takes (`UIO_MAXIOV`).
        const MAX_IOV: usize = 1024;
        let (page, huge) = (page_size(), huge_page_size());
        let iov: Vec<libc::iovec> = ranges
            .into_iter()
            .filter_map(|(map, r)| {
                let base = map.as_ptr() as usize;
                let a = rounded(base + r.start..base + r.end, base, rounding, page, huge);
                (!a.is_empty()).then_some(libc::iovec {
                    iov_base: a.start as *mut libc::c_void,
                    iov_len: a.len(),
                })
            })
            .collect();
        for part in iov.chunks(MAX_IOV) {
            let want: usize = part.iter().map(|v| v.iov_len).sum();
            // SAFETY: every iovec lies within a live read-only file mapping
            // (mappings start on a page and extend to the end of their last
            // page), so MADV_DONTNEED only drops page-table entries: later
            // reads fault the same file contents back in.
            let done = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    PIDFD_SELF,
                    part.as_ptr(),
                    part.len(),
                    libc::MADV_DONTNEED,
                    0,
                )
            };
            if usize::try_from(done).is_ok_and(|d| d == want) {
                continue;
            }
            for v in part {
                // SAFETY: as above. Failure is harmless (memory is simply
                // not released early), so it is ignored.
                unsafe { libc::madvise(v.iov_base, v.iov_len, libc::MADV_DONTNEED) };
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    for (map, r) in ranges {
        let _ = rounding;
        release(map, r);
    }
}

/// What [`release_all`] releases of the address range `a` in a mapping that
/// starts at `map_start` (a page boundary), for pages of `page` bytes and
/// huge pages of `huge` (if the kernel uses them); may be empty.
pub(super) fn rounded(
    a: Range<usize>,
    map_start: usize,
    rounding: Rounding,
    page: usize,
    huge: Option<usize>,
) -> Range<usize> {
    let unit = huge.unwrap_or(page);
    let start = (a.start / unit * unit).max(map_start);
    let end = match rounding {
        Rounding::Whole => a.end.next_multiple_of(page),
        Rounding::Behind => a.end / unit * unit,
    };
    start..end.max(start)
}

/// The size of a page, as the kernel reports it (4 KiB on x86-64, 16 KiB on
/// Apple Silicon and some arm64 kernels, 64 KiB on others).
#[cfg(target_os = "linux")]
pub(super) fn page_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // sysconf cannot fail for _SC_PAGESIZE; 1 keeps the rounding valid
        // (byte granularity) if it ever did.
        usize::try_from(p).map_or(1, |p| p.max(1))
    })
}

/// The kernel's PMD-sized transparent huge page, if it is 2 MiB (x86-64;
/// arm64 with 4 KiB pages). Larger ones (e.g. 512 MiB with 64 KiB pages)
/// would hold back far more than a batch, so they are not rounded to.
#[cfg(target_os = "linux")]
pub(super) fn huge_page_size() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        s.ok()?
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n == 2 << 20)
    })
}

/// Asks for transparent huge pages on the whole pages inside `buf` (Linux;
/// a no-op elsewhere and for buffers under one huge page). Pure advice: the
/// contents and the result of the merge do not change.
pub(super) fn advise_huge_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let page = page_size();
        if buf.len() < HUGE_PAGE {
            return;
        }
        let start = (buf.as_mut_ptr() as usize).next_multiple_of(page);
        let end = (buf.as_mut_ptr() as usize + buf.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside `buf`, memory this process
            // owns and may write; MADV_HUGEPAGE only changes how the kernel
            // backs it, never its contents. Failure (e.g. THP disabled) is
            // harmless and ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Sorts byte ranges and merges the overlapping or touching ones.
pub(super) fn merge_ranges(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn releases_start_at_the_huge_page_and_leave_the_one_read_on() {
        let (page, huge, mib) = (4096, Some(2 << 20), 1 << 20);
        let at = |a: Range<usize>, map_start, r, huge| rounded(a, map_start, r, page, huge);
        // From the huge page holding the start (never before the mapping).
        assert_eq!(
            at(3 * mib..9 * mib, 0, Rounding::Behind, huge),
            2 * mib..8 * mib
        );
        assert_eq!(
            at(3 * mib..9 * mib, 0, Rounding::Whole, huge),
            2 * mib..9 * mib
        );
        assert_eq!(
            at(3 * mib..5000 + 8 * mib, mib, Rounding::Whole, huge).start,
            2 * mib
        );
        assert_eq!(
            at(mib..9 * mib, 4096, Rounding::Behind, huge),
            4096..8 * mib
        );
        // A range inside one huge page: nothing yet, all of it when whole.
        assert!(at(5 * mib..5 * mib + 5, 0, Rounding::Behind, huge).is_empty());
        assert_eq!(
            at(5 * mib..5 * mib + 5, 0, Rounding::Whole, huge),
            4 * mib..5 * mib + page
        );
        // Without huge pages: pages.
        assert_eq!(at(5000..9000, 0, Rounding::Behind, None), 4096..8192);
        assert_eq!(at(5000..9000, 0, Rounding::Whole, None), 4096..12288);
        // Consecutive batches' releases leave no gap, however short the
        // batches: each starts at or before where the previous one ended.
        let ends = [
            0,
            mib / 2,
            mib,
            3 * mib,
            3 * mib + 7,
            4 * mib,
            7 * mib,
            9 * mib,
        ];
        let mut released = 0;
        for w in ends.windows(3) {
            // The release after batch w[1]..w[2] covers it and the one before.
            let r = at(w[0]..w[2], 0, Rounding::Behind, huge);
            assert!(
                r.is_empty() || r.start <= released,
                "{r:?} after {released}"
            );
            released = released.max(r.end);
        }
        let last = at(ends[ends.len() - 2]..9 * mib, 0, Rounding::Whole, huge);
        assert!(last.start <= released && last.end == 9 * mib);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_mapping_and_read_back_the_same() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        // SAFETY: a private temporary file, not modified while mapped.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let sum = |m: &Mmap| m.iter().map(|&b| u64::from(b)).sum::<u64>();
        let want = sum(&map);
        // Resident bytes of this mapping, from /proc/self/smaps.
        let resident = |m: &Mmap| -> usize {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let start = format!("{:x}-", m.as_ptr() as usize);
            let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
            lines.next().expect("the mapping is listed");
            let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
            rss.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
                << 10
        };
        assert!(resident(&map) > 0);
        // Ranges not on page boundaries, in two inputs' worth of one call.
        release_all(
            [(&map, 1000..3 << 20), (&map, 3 << 20..map.len())],
            Rounding::Whole,
        );
        assert_eq!(resident(&map), 0);
        assert_eq!(sum(&map), want);
        // The sum mapped every page again; this releases up to the (huge)
        // page holding the end, and leaves the rest mapped.
        assert_eq!(resident(&map), map.len());
        release_all([(&map, 1000..5 << 20)], Rounding::Behind);
        let base = map.as_ptr() as usize;
        let r = rounded(
            base + 1000..base + (5 << 20),
            base,
            Rounding::Behind,
            page_size(),
            huge_page_size(),
        );
        assert!(r.end > base, "something is released");
        assert_eq!(resident(&map), map.len() - (r.end - base));
        assert_eq!(sum(&map), want);
        assert_eq!(&map[..], &data[..]);
    }
}
