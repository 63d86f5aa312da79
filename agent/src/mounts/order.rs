//! Grouping a dependency graph into freeze levels.
//!
//! Node `i` waits for the nodes in `waits_for[i]` (the filesystems stacked on it, which
//! must be frozen first). A node's level is 0 if it waits for nothing, otherwise one more
//! than the highest level it waits for; every node of a level can be frozen at the same
//! time once the previous levels are frozen.

/// Levels of the graph, each sorted by descending index (later mount first). On a cycle,
/// returns the nodes that could not be placed (those on or behind the cycle), ascending.
pub fn levels(waits_for: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = waits_for.len();
    let mut pending = vec![0usize; n];
    let mut waiters: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in waits_for.iter().enumerate() {
        let mut deps = deps.clone();
        deps.sort_unstable();
        deps.dedup();
        pending[i] = deps.len();
        for d in deps {
            waiters[d].push(i);
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut placed = 0;
    while !current.is_empty() {
        current.sort_unstable_by(|a, b| b.cmp(a));
        let mut next = Vec::new();
        for &i in &current {
            for &w in &waiters[i] {
                pending[w] -= 1;
                if pending[w] == 0 {
                    next.push(w);
                }
            }
        }
        placed += current.len();
        out.push(std::mem::replace(&mut current, next));
    }
    if placed < n {
        return Err((0..n).filter(|&i| pending[i] > 0).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_nodes_share_level_zero_in_reverse_order() {
        assert_eq!(levels(&[vec![], vec![], vec![]]), Ok(vec![vec![2, 1, 0]]));
        assert_eq!(levels(&[]), Ok(vec![]));
    }

    #[test]
    fn a_chain_gives_one_level_per_link() {
        // 0 waits for 1, 1 for 2, 2 for 3 (3 is the innermost loop filesystem).
        let w = [vec![1], vec![2], vec![3], vec![]];
        assert_eq!(levels(&w), Ok(vec![vec![3], vec![2], vec![1], vec![0]]));
    }

    #[test]
    fn level_is_one_more_than_the_deepest_dependency() {
        // 0 waits for 1 (level 0) and 2 (level 1, waits for 3).
        let w = [vec![1, 2], vec![], vec![3], vec![], vec![]];
        assert_eq!(levels(&w), Ok(vec![vec![4, 3, 1], vec![2], vec![0]]));
    }

    #[test]
    fn duplicate_edges_count_once() {
        assert_eq!(levels(&[vec![1, 1], vec![]]), Ok(vec![vec![1], vec![0]]));
    }

    #[test]
    fn cycles_are_reported() {
        assert_eq!(levels(&[vec![1], vec![0], vec![]]), Err(vec![0, 1]));
        assert_eq!(levels(&[vec![0]]), Err(vec![0]));
        // 2 waits behind the cycle and cannot be placed either.
        assert_eq!(
            levels(&[vec![1], vec![0], vec![0], vec![]]),
            Err(vec![0, 1, 2])
        );
    }
}
