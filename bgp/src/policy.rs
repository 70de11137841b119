//! Route policy: which prefixes a peer may announce to us.
//!
//! Owns the prefix-matching rules only. It is pure data plus a predicate: it never touches the
//! RIB, never rewrites attributes and never logs; the RIB asks it one question per prefix.

use std::collections::HashSet;
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

/// What we accept from a peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ImportPolicy {
    /// Every prefix (subject to the RIB's own loop checks).
    #[default]
    AcceptAll,
    /// Nothing: routes are kept in the Adj-RIB-In for inspection but never installed.
    Deny,
    /// A prefix is accepted iff at least one rule matches it (an allow-list).
    Prefixes(Vec<PrefixRule>),
    /// An allow-list with exceptions. Shared, because one list serves many peers: a cluster
    /// mesh gives every node the same one, with every node's host route among the exceptions.
    Filter(Arc<PrefixFilter>),
}

/// `allow` minus the exact prefixes in `except`: a host route for a node address inside an
/// allowed range is refused in one lookup, however many nodes there are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixFilter {
    /// A prefix must match one of these...
    pub allow: Vec<PrefixRule>,
    /// ...and must not be one of these.
    pub except: HashSet<IpNet>,
}

impl ImportPolicy {
    /// True when a route for `prefix` may be installed.
    pub fn accepts(&self, prefix: &IpNet) -> bool {
        match self {
            ImportPolicy::AcceptAll => true,
            ImportPolicy::Deny => false,
            ImportPolicy::Prefixes(rules) => rules.iter().any(|r| r.matches(prefix)),
            ImportPolicy::Filter(f) => {
                !f.except.contains(prefix) && f.allow.iter().any(|r| r.matches(prefix))
            }
        }
    }
}

/// One allow rule of a prefix list, with the usual router semantics (Cisco / FRR / BIRD
/// `prefix-list`):
///
/// - a candidate matches when it lies inside `prefix` (same family, at least as long) and its
///   length is within the range below;
/// - no `ge` and no `le`: the length must equal `prefix`'s length (exact match);
/// - `ge` only: lengths from `ge` up to the family maximum (32 or 128);
/// - `le` only: lengths from `prefix`'s length up to `le`;
/// - both: lengths from `ge` to `le`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRule {
    /// The covering prefix.
    pub prefix: IpNet,
    /// Shortest accepted length ("greater or equal").
    pub ge: Option<u8>,
    /// Longest accepted length ("less or equal").
    pub le: Option<u8>,
}

/// A prefix rule whose length range cannot match anything sensible.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// `ge`/`le` must satisfy `prefix length <= ge <= le <= family maximum`.
    #[error("prefix rule {prefix} ge {ge:?} le {le:?}: need {} <= ge <= le <= {max}", prefix.prefix_len())]
    BadLengthRange {
        /// The rule's prefix.
        prefix: IpNet,
        /// The given `ge`.
        ge: Option<u8>,
        /// The given `le`.
        le: Option<u8>,
        /// The family's maximum length.
        max: u8,
    },
}

impl PrefixRule {
    /// A validated rule.
    pub fn new(prefix: IpNet, ge: Option<u8>, le: Option<u8>) -> Result<Self, PolicyError> {
        let rule = PrefixRule {
            prefix: prefix.trunc(),
            ge,
            le,
        };
        let (min, max) = rule.length_range();
        if min < prefix.prefix_len() || min > max || max > prefix.max_prefix_len() {
            return Err(PolicyError::BadLengthRange {
                prefix,
                ge,
                le,
                max: prefix.max_prefix_len(),
            });
        }
        Ok(rule)
    }

    /// Exactly `prefix`.
    pub fn exact(prefix: IpNet) -> Self {
        PrefixRule {
            prefix: prefix.trunc(),
            ge: None,
            le: None,
        }
    }

    /// `prefix` and every more specific prefix inside it ("le 32" / "le 128").
    pub fn or_longer(prefix: IpNet) -> Self {
        PrefixRule {
            prefix: prefix.trunc(),
            ge: None,
            le: Some(prefix.max_prefix_len()),
        }
    }

    /// The inclusive range of accepted prefix lengths.
    pub fn length_range(&self) -> (u8, u8) {
        let own = self.prefix.prefix_len();
        match (self.ge, self.le) {
            (None, None) => (own, own),
            (Some(ge), None) => (ge, self.prefix.max_prefix_len()),
            (None, Some(le)) => (own, le),
            (Some(ge), Some(le)) => (ge, le),
        }
    }

    /// True when `candidate` is allowed by this rule.
    pub fn matches(&self, candidate: &IpNet) -> bool {
        let (min, max) = self.length_range();
        let len = candidate.prefix_len();
        // `contains` is false across families, so a v4 rule never matches a v6 route.
        len >= min && len <= max && self.prefix.contains(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn rule_without_ge_le_matches_exact_prefix_only() {
        let r = PrefixRule::exact(net("10.0.0.0/8"));
        assert!(r.matches(&net("10.0.0.0/8")));
        assert!(!r.matches(&net("10.1.0.0/16")));
        assert!(!r.matches(&net("0.0.0.0/0")));
    }

    #[test]
    fn rule_with_le_matches_more_specifics_up_to_le() {
        let r = PrefixRule::new(net("10.0.0.0/8"), None, Some(24)).unwrap();
        assert!(r.matches(&net("10.0.0.0/8")));
        assert!(r.matches(&net("10.1.2.0/24")));
        assert!(!r.matches(&net("10.1.2.3/32")));
        assert!(!r.matches(&net("11.0.0.0/24")));
    }

    #[test]
    fn rule_with_ge_matches_from_ge_to_family_maximum() {
        let r = PrefixRule::new(net("10.0.0.0/8"), Some(32), None).unwrap();
        assert!(r.matches(&net("10.9.9.9/32")));
        assert!(!r.matches(&net("10.9.9.0/24")));
    }

    #[test]
    fn rule_never_matches_other_family() {
        let r = PrefixRule::or_longer(net("0.0.0.0/0"));
        assert!(r.matches(&net("192.0.2.1/32")));
        assert!(!r.matches(&net("2001:db8::/32")));
    }

    #[test]
    fn inconsistent_length_range_is_rejected() {
        assert!(PrefixRule::new(net("10.0.0.0/16"), Some(8), None).is_err());
        assert!(PrefixRule::new(net("10.0.0.0/16"), Some(28), Some(24)).is_err());
        assert!(PrefixRule::new(net("10.0.0.0/16"), None, Some(33)).is_err());
    }

    #[test]
    fn policies_accept_all_deny_and_allow_list() {
        let p = net("10.1.0.0/16");
        assert!(ImportPolicy::AcceptAll.accepts(&p));
        assert!(!ImportPolicy::Deny.accepts(&p));
        let list = ImportPolicy::Prefixes(vec![
            PrefixRule::exact(net("192.0.2.0/24")),
            PrefixRule::or_longer(net("10.0.0.0/8")),
        ]);
        assert!(list.accepts(&p));
        assert!(!list.accepts(&net("172.16.0.0/12")));
        assert!(!ImportPolicy::Prefixes(vec![]).accepts(&p));
    }

    #[test]
    fn a_filter_refuses_its_exceptions_inside_allowed_ranges() {
        let f = ImportPolicy::Filter(Arc::new(PrefixFilter {
            allow: vec![PrefixRule::new(net("192.168.50.0/24"), Some(32), None).unwrap()],
            except: [net("192.168.50.51/32")].into(),
        }));
        assert!(f.accepts(&net("192.168.50.77/32")));
        assert!(!f.accepts(&net("192.168.50.51/32")));
        assert!(!f.accepts(&net("192.168.50.0/24")));
    }
}
