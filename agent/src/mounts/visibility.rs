//! Which mounts are hidden from path lookup by later mounts.
//!
//! The freezer opens a mount point by path; if another mount sits on top of it (or on top of
//! a directory above it), that open reaches the other filesystem and FIFREEZE would freeze
//! the wrong superblock. A hidden mount is therefore never planned.
//!
//! Decided from the mount tree only (no path resolution, which could touch a frozen
//! filesystem). A mount is visible when nothing covers it (a child mounted at its own mount
//! point) and the place it is attached to is reachable. That place is reachable when:
//! * it is the parent's own mount point (the mount covers its parent): the parent's place
//!   is reachable;
//! * otherwise: the parent is visible and no sibling is mounted on a directory above it
//!   (such a sibling came later, or this mount would hang below it).

use std::collections::HashMap;

use super::Mount;

/// For each mount (same indexing as `mounts`), the index of a mount that hides it.
pub fn hidden_by(mounts: &[Mount]) -> Vec<Option<usize>> {
    let tree = Tree::new(mounts);
    (0..mounts.len()).map(|i| tree.hider(i, 0)).collect()
}

struct Tree<'a> {
    mounts: &'a [Mount],
    by_id: HashMap<u32, usize>,
    children: HashMap<u32, Vec<usize>>,
}

impl<'a> Tree<'a> {
    fn new(mounts: &'a [Mount]) -> Self {
        let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, m) in mounts.iter().enumerate() {
            if m.parent_id != m.mount_id {
                children.entry(m.parent_id).or_default().push(i);
            }
        }
        let by_id = mounts
            .iter()
            .enumerate()
            .map(|(i, m)| (m.mount_id, i))
            .collect();
        Tree {
            mounts,
            by_id,
            children,
        }
    }

    fn children(&self, id: u32) -> &[usize] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }

    fn parent(&self, i: usize) -> Option<usize> {
        let p = *self.by_id.get(&self.mounts[i].parent_id)?;
        (p != i).then_some(p)
    }

    /// The mount hiding `i`, if any. `depth` bounds the walk on a malformed parent cycle.
    fn hider(&self, i: usize, depth: usize) -> Option<usize> {
        let m = &self.mounts[i];
        let mut covering = self.children(m.mount_id).iter().copied();
        match covering.find(|&c| self.mounts[c].mount_point == m.mount_point) {
            Some(c) => Some(c),
            None => self.place_hider(i, depth),
        }
    }

    /// The mount making the place `i` is attached to unreachable, if any.
    fn place_hider(&self, i: usize, depth: usize) -> Option<usize> {
        let p = self.parent(i).filter(|_| depth <= self.mounts.len())?;
        let mp = &self.mounts[i].mount_point;
        if *mp == self.mounts[p].mount_point {
            return self.place_hider(p, depth + 1);
        }
        let siblings = self.children(self.mounts[p].mount_id).iter().copied();
        let mut over = siblings.filter(|&s| {
            let above = &self.mounts[s].mount_point;
            s != i && above != mp && mp.starts_with(above)
        });
        over.next().or_else(|| self.hider(p, depth + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_mountinfo;

    fn hidden(text: &str) -> Vec<Option<usize>> {
        hidden_by(&parse_mountinfo(text.as_bytes()).unwrap())
    }

    #[test]
    fn nothing_hidden_in_a_plain_tree() {
        let h = hidden(
            "22 27 0:21 / /proc rw - proc proc rw\n\
             27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             30 27 254:16 / /data rw - ext4 /dev/vdb rw\n\
             31 30 254:32 / /data/sub rw - ext4 /dev/vdc rw\n",
        );
        assert_eq!(h, [None, None, None, None]);
    }

    #[test]
    fn a_mount_on_the_same_point_covers_it_and_its_children() {
        let h = hidden(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             30 27 254:16 / /data rw - ext4 /dev/vdb rw\n\
             31 30 254:32 / /data/sub rw - ext4 /dev/vdc rw\n\
             32 30 0:50 / /data rw - tmpfs tmpfs rw\n",
        );
        assert_eq!(h, [None, Some(3), Some(3), None]);
    }

    #[test]
    fn a_later_sibling_above_hides_it() {
        // /mnt/a/b mounted first, then something on /mnt/a: /mnt/a/b now leads into it.
        let h = hidden(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             30 27 254:16 / /mnt/a/b rw - ext4 /dev/vdb rw\n\
             31 27 254:32 / /mnt/a rw - ext4 /dev/vdc rw\n\
             32 27 254:48 / /mnt/ab rw - ext4 /dev/vdd rw\n",
        );
        assert_eq!(h, [None, Some(2), None, None]);
    }

    #[test]
    fn stacked_devpts_on_this_kind_of_machine() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mountinfo/this-machine.txt"
        ));
        let mounts = parse_mountinfo(text.as_bytes()).unwrap();
        let h = hidden_by(&mounts);
        let idx = |id: u32| mounts.iter().position(|m| m.mount_id == id).unwrap();
        // 26 (/dev/pts) is covered by 29, 25 (/dev/shm) by 30; the root and /proc are not.
        assert_eq!(h[idx(26)], Some(idx(29)));
        assert_eq!(h[idx(25)], Some(idx(30)));
        assert_eq!(h[idx(27)], None);
        assert_eq!(h[idx(22)], None);
        assert_eq!(h.iter().filter(|x| x.is_some()).count(), 2);
    }
}
