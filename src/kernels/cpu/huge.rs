//! Zeroed buffers on 2 MiB pages, for the bytes a decode step streams end to end: weights
//! repacked at load ([`super::repacked`]), and the bandwidth test that bounds decoding.
//!
//! Read through 4 KiB pages, a stream takes a TLB miss every 4 KiB and the CPU's prefetchers
//! stop at every page's end. On an AMD EPYC (Zen 3) an AVX2 sum of 1 GiB read 12–20% faster
//! from 2 MiB pages (one and two threads), the Q6_K decode kernel over the Llama 3.2 1B's
//! output layer went from 0.7–0.8 to 1.0–1.1 times the 4 KiB sum's rate, and the 1B's
//! decode, its repacked weights on them, from a median 31.0 to 33.7 t/s (ten alternating
//! pairs, nine faster).
//!
//! Each buffer is an anonymous mapping of its own, its start on a 2 MiB boundary, its whole
//! 2 MiB pages advised `MADV_HUGEPAGE` before anything touches them and the partial one at
//! its end `MADV_NOHUGEPAGE` (so that it holds no more than it uses). Heap memory would not
//! do: a buffer there may reuse pages an earlier one touched, which keep 4 KiB. The advice is
//! a hint: where the kernel has no huge pages to give, or on another system, the buffer is
//! the same, only slower to stream.

use memmap2::MmapMut;

/// A huge page's bytes.
const HUGE: usize = 2 << 20;

/// `len` zeroed bytes starting on a 2 MiB boundary (see the module's notes).
pub struct Pages {
    map: MmapMut,
    at: usize,
    len: usize,
}

impl Pages {
    /// `len` zeroed bytes; `Err` when the system has no memory to map.
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        // One huge page more than asked for, so that a 2 MiB boundary falls in the first;
        // the pages before it and after the end are never touched, so they cost nothing.
        let map = MmapMut::map_anon(len + HUGE)?;
        let at = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
        #[cfg(target_os = "linux")]
        {
            use memmap2::Advice;
            let whole = len / HUGE * HUGE;
            if whole > 0 {
                let _ = map.advise_range(Advice::HugePage, at, whole);
            }
            let _ = map.advise_range(Advice::NoHugePage, at + whole, HUGE);
        }
        Ok(Self { map, at, len })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.at..self.at + self.len]
    }

    /// The bytes, to write.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.at..self.at + self.len]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `addr` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    pub(crate) fn vm_flags(addr: usize) -> Option<Vec<String>> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((Ok(a), Ok(b))) =
                range.map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)))
            {
                inside = (a..b).contains(&addr);
            } else if let (true, Some(flags)) = (inside, line.strip_prefix("VmFlags:")) {
                return Some(flags.split_whitespace().map(String::from).collect());
            }
        }
        None
    }

    /// Whether this kernel has transparent huge pages (without them the advice is refused
    /// and there is nothing to ask for).
    #[cfg(target_os = "linux")]
    pub(crate) fn has_huge_pages() -> bool {
        std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists()
    }

    #[test]
    fn the_bytes_are_zeroed_writable_and_start_on_a_huge_page() {
        let len = 5 * HUGE + 12_345;
        let mut p = Pages::zeroed(len).unwrap();
        assert_eq!(p.bytes().len(), len);
        assert!(p.bytes().iter().all(|&b| b == 0));
        assert_eq!(p.bytes().as_ptr() as usize % HUGE, 0);
        p.bytes_mut()[len - 1] = 7;
        assert_eq!(p.bytes()[len - 1], 7);
        assert_eq!(Pages::zeroed(0).unwrap().bytes().len(), 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn whole_huge_pages_are_advised_and_the_partial_end_is_not() {
        let p = Pages::zeroed(3 * HUGE + 4096).unwrap();
        let base = p.bytes().as_ptr() as usize;
        let flags = |at: usize| vm_flags(base + at).expect("the buffer's mapping is listed");
        let hg = |at: usize| flags(at).iter().any(|f| f == "hg");
        let nh = |at: usize| flags(at).iter().any(|f| f == "nh");
        assert_eq!(
            (hg(0), hg(3 * HUGE - 1)),
            (has_huge_pages(), has_huge_pages())
        );
        assert_eq!((hg(3 * HUGE), nh(3 * HUGE)), (false, has_huge_pages()));
    }
}
