//! Choosing from SRV records (RFC 2782): the lowest priority value first,
//! the next one only when no target of the first resolves; a record's
//! weight becomes the backend's weight.

/// One SRV record, as the resolver returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative share within one priority.
    pub weight: u16,
    /// The port on the target.
    pub port: u16,
    /// The target host, without the trailing dot.
    pub target: String,
}

/// The records grouped by priority, lowest value first. A target of "."
/// means "no service here" (RFC 2782) and is left out, and so is port 0.
pub fn priority_groups(mut records: Vec<SrvRecord>) -> Vec<Vec<SrvRecord>> {
    records.retain(|r| !r.target.is_empty() && r.target != "." && r.port != 0);
    records.sort_by(|a, b| (a.priority, &a.target, a.port).cmp(&(b.priority, &b.target, b.port)));
    let mut groups: Vec<Vec<SrvRecord>> = Vec::new();
    for record in records {
        match groups.last_mut() {
            Some(group) if group[0].priority == record.priority => group.push(record),
            _ => groups.push(vec![record]),
        }
    }
    groups
}

/// A record's weight as a backend weight. RFC 2782 gives weight 0 "a very
/// small chance" of being chosen; the balancer has no share below 1, so it
/// gets 1 (the smallest share there is).
pub fn backend_weight(weight: u16) -> u32 {
    u32::from(weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 9000,
            target: target.to_string(),
        }
    }

    #[test]
    fn groups_come_lowest_priority_first_without_the_null_target() {
        let groups = priority_groups(vec![
            rec(20, 1, "c.test"),
            rec(10, 3, "b.test"),
            rec(10, 1, "a.test"),
            rec(5, 0, "."),
        ]);
        let targets: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.target.as_str()).collect())
            .collect();
        assert_eq!(targets, [vec!["a.test", "b.test"], vec!["c.test"]]);
    }

    #[test]
    fn weight_zero_is_the_smallest_share() {
        assert_eq!(backend_weight(0), 1);
        assert_eq!(backend_weight(1), 1);
        assert_eq!(backend_weight(65535), 65535);
    }
}
