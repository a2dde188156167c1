//! Protocol-neutral batch planner: merges address ranges of one table into
//! blocks read with as few requests as the device limits allow.

/// An address range in the table identified by `key`. Units are abstract
/// (registers or bits). `len >= 1` and `start + len <= 65536`; anything else
/// is clamped into that space. A span made of elements `align` units long
/// (a REAL array: 2) that needs several requests is cut only between elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span<K> {
    pub key: K,
    pub start: u16,
    pub len: u32,
    pub align: u16,
}

/// Per-key limits: the longest single request, and the largest hole between
/// two spans worth reading through to merge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_len: u16,
    pub max_gap: u16,
}

/// A contiguous range covering one or more spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<K> {
    pub key: K,
    pub start: u16,
    pub len: u32,
    /// Indices into the input spans, in input order.
    pub members: Vec<usize>,
}

/// One wire request: part of block `block`, starting `offset` units into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest<K> {
    pub key: K,
    pub start: u16,
    pub len: u16,
    pub block: usize,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K> {
    pub blocks: Vec<Block<K>>,
    pub requests: Vec<ReadRequest<K>>,
}

/// The address space is 16 bits wide.
const SPACE: u32 = 1 << 16;

/// The block being grown; `end` is exclusive.
struct Open<K> {
    key: K,
    start: u32,
    end: u32,
    members: Vec<usize>,
    isolated: bool,
    max_len: u32,
    max_gap: u32,
    /// Element size of the first span; only matters for a lone span longer than `max_len`.
    align: u32,
}

/// Plans blocks and requests for `spans`. `limits(key)` gives per-key limits;
/// `isolated(i)` marks spans known to fail, which are never merged with others.
/// Blocks come out in (key, start) order; requests tile each block in order.
pub fn plan<K: Copy + Ord>(
    spans: &[Span<K>],
    limits: impl Fn(K) -> PlanLimits,
    isolated: impl Fn(usize) -> bool,
) -> Plan<K> {
    // (key, start, end, index); the stable sort keeps input order among ties.
    let mut items: Vec<(K, u32, u32, usize)> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = u32::from(s.start);
            (s.key, start, start.saturating_add(s.len.max(1)).min(SPACE), i)
        })
        .collect();
    items.sort_by_key(|&(key, start, _, _)| (key, start));

    let mut out = Plan { blocks: Vec::new(), requests: Vec::new() };
    let mut open: Option<Open<K>> = None;
    for (key, start, end, i) in items {
        let iso = isolated(i);
        if let Some(cur) = open.as_mut() {
            // Sorted input: start >= cur.start, so no underflow below.
            let fits = !iso
                && !cur.isolated
                && cur.key == key
                && start.saturating_sub(cur.end) <= cur.max_gap
                && cur.end.max(end) - cur.start <= cur.max_len;
            if fits {
                cur.end = cur.end.max(end);
                cur.members.push(i);
                continue;
            }
        }
        if let Some(cur) = open.take() {
            close(cur, &mut out);
        }
        let lim = limits(key);
        open = Some(Open {
            key,
            start,
            end,
            members: vec![i],
            isolated: iso,
            // A zero limit would never make progress; treat it as 1.
            max_len: u32::from(lim.max_len.max(1)),
            max_gap: u32::from(lim.max_gap),
            align: spans.get(i).map_or(1, |s| u32::from(s.align.max(1))),
        });
    }
    if let Some(cur) = open {
        close(cur, &mut out);
    }
    out
}

/// Emits the block and the requests that tile it.
fn close<K: Copy>(mut cur: Open<K>, out: &mut Plan<K>) {
    let block = out.blocks.len();
    let len = cur.end - cur.start;
    // Whole elements per request when an element fits in one.
    let step = if cur.align <= cur.max_len { cur.max_len / cur.align * cur.align } else { cur.max_len };
    let mut offset = 0u32;
    while offset < len {
        let chunk = (len - offset).min(step);
        // Both always fit (start + offset < 65536, chunk <= u16::MAX); the
        // guard only keeps this panic-free.
        let (Ok(start), Ok(chunk16)) = (u16::try_from(cur.start + offset), u16::try_from(chunk)) else {
            break;
        };
        out.requests.push(ReadRequest { key: cur.key, start, len: chunk16, block, offset });
        offset += chunk;
    }
    cur.members.sort_unstable();
    out.blocks.push(Block {
        key: cur.key,
        start: u16::try_from(cur.start).unwrap_or(u16::MAX),
        len,
        members: cur.members,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sp(key: u8, start: u16, len: u32) -> Span<u8> {
        Span { key, start, len, align: 1 }
    }

    fn lim(max_len: u16, max_gap: u16) -> impl Fn(u8) -> PlanLimits {
        move |_| PlanLimits { max_len, max_gap }
    }

    fn none(_: usize) -> bool {
        false
    }

    /// Blocks as (key, start, len, members).
    fn blocks(p: &Plan<u8>) -> Vec<(u8, u16, u32, Vec<usize>)> {
        p.blocks.iter().map(|b| (b.key, b.start, b.len, b.members.clone())).collect()
    }

    fn reqs(p: &Plan<u8>) -> Vec<(u8, u16, u16, usize, u32)> {
        p.requests.iter().map(|r| (r.key, r.start, r.len, r.block, r.offset)).collect()
    }

    #[test]
    fn empty() {
        let p = plan::<u8>(&[], lim(10, 0), none);
        assert!(p.blocks.is_empty() && p.requests.is_empty());
    }

    #[test]
    fn merges_adjacent_and_overlapping_in_input_order() {
        let p = plan(&[sp(0, 10, 2), sp(0, 0, 10), sp(0, 5, 3)], lim(125, 0), none);
        assert_eq!(blocks(&p), [(0, 0, 12, vec![0, 1, 2])]);
        assert_eq!(reqs(&p), [(0, 0, 12, 0, 0)]);
    }

    #[test]
    fn gaps() {
        let spans = [sp(0, 0, 2), sp(0, 5, 2), sp(0, 20, 1)];
        // Gap 3 to the second span, 13 to the third.
        assert_eq!(blocks(&plan(&spans, lim(125, 2), none)).len(), 3);
        assert_eq!(blocks(&plan(&spans, lim(125, 3), none)), [(0, 0, 7, vec![0, 1]), (0, 20, 1, vec![2])]);
        assert_eq!(blocks(&plan(&spans, lim(125, 13), none)), [(0, 0, 21, vec![0, 1, 2])]);
    }

    #[test]
    fn max_len_splits_blocks() {
        let spans = [sp(0, 0, 4), sp(0, 4, 4), sp(0, 8, 4)];
        let p = plan(&spans, lim(8, 10), none);
        assert_eq!(blocks(&p), [(0, 0, 8, vec![0, 1]), (0, 8, 4, vec![2])]);
        assert_eq!(reqs(&p), [(0, 0, 8, 0, 0), (0, 8, 4, 1, 0)]);
    }

    #[test]
    fn long_span_is_chunked_and_alone() {
        let p = plan(&[sp(0, 100, 300), sp(0, 150, 10), sp(0, 400, 5)], lim(125, 50), none);
        assert_eq!(blocks(&p), [(0, 100, 300, vec![0]), (0, 150, 10, vec![1]), (0, 400, 5, vec![2])]);
        assert_eq!(reqs(&p)[..3], [(0, 100, 125, 0, 0), (0, 225, 125, 0, 125), (0, 350, 50, 0, 250)]);
        // The tail of the address space is reachable.
        let p = plan(&[sp(0, 65000, 536)], lim(125, 0), none);
        let last = p.requests.last().unwrap();
        assert_eq!((last.start, last.len), (65500, 36));
    }

    #[test]
    fn isolation() {
        let spans = [sp(0, 0, 2), sp(0, 2, 2), sp(0, 4, 2)];
        let p = plan(&spans, lim(125, 10), |i| i == 1);
        assert_eq!(blocks(&p), [(0, 0, 2, vec![0]), (0, 2, 2, vec![1]), (0, 4, 2, vec![2])]);
    }

    #[test]
    fn per_key_limits_and_key_separation() {
        let spans = [sp(1, 0, 4), sp(2, 0, 4), sp(1, 4, 4), sp(2, 4, 4)];
        let limits = |k: u8| PlanLimits { max_len: if k == 1 { 8 } else { 4 }, max_gap: 0 };
        let p = plan(&spans, limits, none);
        assert_eq!(blocks(&p), [(1, 0, 8, vec![0, 2]), (2, 0, 4, vec![1]), (2, 4, 4, vec![3])]);
    }

    #[test]
    fn duplicates_share_a_block() {
        let p = plan(&[sp(0, 7, 3), sp(0, 7, 3), sp(0, 7, 3)], lim(125, 0), none);
        assert_eq!(blocks(&p), [(0, 7, 3, vec![0, 1, 2])]);
        assert_eq!(p.requests.len(), 1);
    }

    #[test]
    fn bad_input_does_not_panic() {
        let p = plan(&[sp(0, 65535, u32::MAX), sp(0, 3, 0)], lim(0, u16::MAX), none);
        assert_eq!(blocks(&p), [(0, 3, 1, vec![1]), (0, 65535, 1, vec![0])]);
        assert!(p.requests.iter().all(|r| r.len == 1));
    }

    #[test]
    fn long_spans_are_cut_between_elements() {
        // REAL[100]: 200 registers in elements of 2; 125 per request would cut element 62.
        let real_array = Span { key: 0u8, start: 0, len: 200, align: 2 };
        let p = plan(&[real_array], lim(125, 0), none);
        assert_eq!(p.requests.iter().map(|r| (r.offset, r.len)).collect::<Vec<_>>(), [(0, 124), (124, 76)]);
        // An element longer than a request cannot stay whole: plain cuts.
        let p = plan(&[Span { key: 0u8, start: 0, len: 10, align: 8 }], lim(4, 0), none);
        assert_eq!(p.requests.iter().map(|r| r.len).collect::<Vec<_>>(), [4, 4, 2]);
    }

    fn case() -> impl Strategy<Value = (Vec<Span<u8>>, Vec<PlanLimits>, Vec<bool>)> {
        let span = (0u8..3, 0u16..600, 1u32..300, 1u16..5).prop_map(|(key, start, len, align)| Span {
            key,
            start,
            len,
            align,
        });
        let limits = (1u16..130, 0u16..20).prop_map(|(max_len, max_gap)| PlanLimits { max_len, max_gap });
        (
            prop::collection::vec(span, 0..40),
            prop::collection::vec(limits, 3),
            prop::collection::vec(prop::bool::weighted(0.1), 40),
        )
    }

    proptest! {
        #[test]
        fn plan_invariants((spans, limits, iso) in case()) {
            let lim_of = |k: u8| limits.get(usize::from(k)).copied().unwrap_or(PlanLimits { max_len: 1, max_gap: 0 });
            let is_iso = |i: usize| iso.get(i).copied().unwrap_or(false);
            let p = plan(&spans, lim_of, is_iso);

            let mut seen = vec![0usize; spans.len()];
            for (b, block) in p.blocks.iter().enumerate() {
                let max_len = u32::from(lim_of(block.key).max_len);
                prop_assert!(block.len <= max_len || block.members.len() == 1);
                prop_assert!(block.members.windows(2).all(|w| w[0] < w[1]));
                let bend = u32::from(block.start) + block.len;
                for &m in &block.members {
                    seen[m] += 1;
                    let s = spans[m];
                    prop_assert_eq!(s.key, block.key);
                    prop_assert!(block.start <= s.start && u32::from(s.start) + s.len <= bend);
                    prop_assert!(!is_iso(m) || block.members.len() == 1);
                }
                // Requests for this block tile it exactly, in order.
                let mut next = 0u32;
                for r in p.requests.iter().filter(|r| r.block == b) {
                    prop_assert_eq!(r.key, block.key);
                    prop_assert!(r.len >= 1 && u32::from(r.len) <= max_len);
                    prop_assert_eq!(r.offset, next);
                    prop_assert_eq!(u32::from(r.start), u32::from(block.start) + r.offset);
                    next += u32::from(r.len);
                }
                prop_assert_eq!(next, block.len);
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            prop_assert!(p.blocks.windows(2).all(|w| (w[0].key, w[0].start) <= (w[1].key, w[1].start)));
            prop_assert!(p.requests.windows(2).all(|w| w[0].block <= w[1].block));
        }
    }
}
