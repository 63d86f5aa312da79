//! Merging the expositions of many guests (and the proxy's own series) into one: every guest
//! sample gets `vm="NAME"`, each family's HELP and TYPE appear once, and all of a family's
//! samples stay together, as the text format requires.
//!
//! A guest sample that already carries a `vm` label keeps it as `exported_vm` (Prometheus'
//! own rule for clashing target labels). A family whose TYPE differs from the same family of
//! an earlier guest (an agent of another version) is dropped for that guest and reported,
//! because mixing types would make the whole exposition invalid.

use std::collections::HashMap;

use bytes::Bytes;

use super::exposition::{write_sample, Family, MetricType, Sample};

/// The label the proxy adds to every guest sample.
pub const VM_LABEL: &str = "vm";
/// Where a guest's own `vm` label is kept.
pub const EXPORTED_VM_LABEL: &str = "exported_vm";

/// One family of the merged exposition: its metadata and, per source (guest or the proxy),
/// the rendered sample lines as a slice of that source's one buffer.
#[derive(Debug)]
struct Merged {
    name: String,
    help: Option<String>,
    kind: MetricType,
    parts: Vec<Bytes>,
}

/// Families accumulated for one exposition.
///
/// Memory is what the output needs and little more: each guest's samples are rendered
/// (relabelled) into one buffer as soon as the guest is added, its parsed form is dropped,
/// and every family keeps only slices of those buffers ([`Merger::into_chunks`] hands them
/// to the HTTP body without copying). So the proxy holds one copy of the merged text, not
/// the parsed guests plus the text.
#[derive(Debug, Default)]
pub struct Merger {
    families: Vec<Merged>,
    index: HashMap<String, usize>,
}

/// A family of a guest that could not be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The guest.
    pub vm: String,
    /// The family.
    pub family: String,
    /// Why.
    pub reason: String,
}

fn relabel(sample: &mut Sample, vm: &str) {
    if sample.labels.iter().any(|(k, _)| k == VM_LABEL) {
        // Renaming must not produce a duplicate label.
        sample.labels.retain(|(k, _)| k != EXPORTED_VM_LABEL);
    }
    for (k, _) in sample.labels.iter_mut() {
        if k == VM_LABEL {
            *k = EXPORTED_VM_LABEL.to_string();
        }
    }
    sample
        .labels
        .insert(0, (VM_LABEL.to_string(), vm.to_string()));
}

impl Merger {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// The family's slot, or why the family cannot join.
    fn slot(&mut self, source: &str, family: &Family) -> Result<usize, Conflict> {
        match self.index.get(&family.name) {
            Some(&i) => {
                let existing = &mut self.families[i];
                if existing.kind != family.kind {
                    return Err(Conflict {
                        vm: source.to_string(),
                        family: family.name.clone(),
                        reason: format!(
                            "type {} differs from {} seen before",
                            family.kind.as_str(),
                            existing.kind.as_str()
                        ),
                    });
                }
                if existing.help.is_none() {
                    existing.help.clone_from(&family.help);
                }
                Ok(i)
            }
            None => {
                self.index.insert(family.name.clone(), self.families.len());
                self.families.push(Merged {
                    name: family.name.clone(),
                    help: family.help.clone(),
                    kind: family.kind,
                    parts: Vec::new(),
                });
                Ok(self.families.len() - 1)
            }
        }
    }

    /// Renders `families` of one source into one buffer (with `vm` set on every sample when
    /// given) and records each family's slice of it.
    fn add(&mut self, source: &str, vm: Option<&str>, families: Vec<Family>) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        let mut buf = String::new();
        let mut ranges = Vec::with_capacity(families.len());
        for mut f in families {
            let slot = match self.slot(source, &f) {
                Ok(i) => i,
                Err(c) => {
                    conflicts.push(c);
                    continue;
                }
            };
            let start = buf.len();
            for s in &mut f.samples {
                if let Some(vm) = vm {
                    relabel(s, vm);
                }
                write_sample(&mut buf, s);
            }
            if buf.len() > start {
                ranges.push((slot, start, buf.len()));
            }
        }
        buf.shrink_to_fit();
        let all = Bytes::from(buf);
        for (slot, start, end) in ranges {
            self.families[slot].parts.push(all.slice(start..end));
        }
        conflicts
    }

    /// Adds a guest's families with `vm` set on every sample; returns what was dropped.
    pub fn add_guest(&mut self, vm: &str, families: Vec<Family>) -> Vec<Conflict> {
        self.add(vm, Some(vm), families)
    }

    /// Adds one guest's families unchanged (no `vm` label: for a VM's own endpoint, where
    /// Prometheus adds `vm` from the service discovery labels); returns what was dropped.
    pub fn add_guest_unlabelled(&mut self, vm: &str, families: Vec<Family>) -> Vec<Conflict> {
        self.add(vm, None, families)
    }

    /// Adds one of the proxy's own families (its samples already labelled).
    pub fn add_own(&mut self, family: Family) -> Result<(), Conflict> {
        match self.add("", None, vec![family]).pop() {
            Some(c) => Err(c),
            None => Ok(()),
        }
    }

    /// The exposition as chunks, in order: each family's HELP and TYPE, then its samples
    /// from every source. Families without samples are left out (a TYPE line alone is
    /// legal, but noise).
    pub fn into_chunks(self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(self.families.len() * 2);
        for f in self.families {
            if f.parts.is_empty() {
                continue;
            }
            let mut head = String::new();
            if let Some(help) = &f.help {
                head.push_str(&format!(
                    "# HELP {} {}\n",
                    f.name,
                    super::exposition::escape_help(help)
                ));
            }
            head.push_str(&format!("# TYPE {} {}\n", f.name, f.kind.as_str()));
            out.push(Bytes::from(head));
            out.extend(f.parts);
        }
        out
    }

    /// The exposition text.
    pub fn render(self) -> String {
        let chunks = self.into_chunks();
        let mut out = String::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in chunks {
            // Every chunk was built from a String.
            out.push_str(std::str::from_utf8(&c).unwrap_or_default());
        }
        out
    }
}

/// A family of the proxy's own, for [`Merger::add_own`].
pub fn own_family(name: &str, kind: MetricType, help: &str, samples: Vec<Sample>) -> Family {
    Family {
        name: name.to_string(),
        help: Some(help.to_string()),
        kind,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::super::exposition::parse;
    use super::*;

    const A: &str = "# HELP up_total x\n# TYPE guest_fs_frozen gauge\nguest_fs_frozen{mountpoint=\"/a\"} 1\n# TYPE guest_h histogram\nguest_h_bucket{le=\"+Inf\"} 1\nguest_h_sum 0.5\nguest_h_count 1\n";
    const B: &str = "# HELP guest_fs_frozen Frozen now.\n# TYPE guest_fs_frozen gauge\nguest_fs_frozen{mountpoint=\"/b\",vm=\"inner\"} 0\n# TYPE guest_h gauge\nguest_h 3\n";

    #[test]
    fn families_merge_once_with_vm_labels() {
        let mut m = Merger::new();
        assert!(m.add_guest("vm-a", parse(A).unwrap()).is_empty());
        let conflicts = m.add_guest("vm\"b", parse(B).unwrap());
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].family, "guest_h");
        let out = m.render();
        assert_eq!(
            out.matches("# TYPE guest_fs_frozen gauge").count(),
            1,
            "{out}"
        );
        // HELP taken from the guest that had one.
        assert!(
            out.contains("# HELP guest_fs_frozen Frozen now.\n"),
            "{out}"
        );
        assert!(
            out.contains("guest_fs_frozen{vm=\"vm-a\",mountpoint=\"/a\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "guest_fs_frozen{vm=\"vm\\\"b\",mountpoint=\"/b\",exported_vm=\"inner\"} 0\n"
            ),
            "{out}"
        );
        assert!(out.contains("guest_h_bucket{vm=\"vm-a\",le=\"+Inf\"} 1\n"));
        assert!(!out.contains("guest_h 3"));
        // The samples of a family are contiguous: re-parsing yields each family once.
        let back = parse(&out).unwrap();
        let frozen = back.iter().find(|f| f.name == "guest_fs_frozen").unwrap();
        assert_eq!(frozen.samples.len(), 2);
        // The HELP-only family "up_total" had no samples and is not printed.
        assert!(!out.contains("up_total"));
    }

    #[test]
    fn own_families_render_after_guests() {
        let mut m = Merger::new();
        m.add_guest("a", parse(A).unwrap());
        m.add_own(own_family(
            "guest_agent_up",
            MetricType::Gauge,
            "1 when the last fetch worked.",
            vec![Sample {
                name: "guest_agent_up".into(),
                labels: vec![("vm".into(), "a".into())],
                value: "1".into(),
                timestamp: None,
            }],
        ))
        .unwrap();
        let clash = m.add_own(own_family(
            "guest_fs_frozen",
            MetricType::Counter,
            "x",
            vec![],
        ));
        assert!(clash.is_err());
        let out = m.render();
        assert!(out.ends_with(
            "# HELP guest_agent_up 1 when the last fetch worked.\n# TYPE guest_agent_up gauge\nguest_agent_up{vm=\"a\"} 1\n"
        ), "{out}");
    }
}
