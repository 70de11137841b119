//! Policy rules `from ADDR lookup TABLE priority P proto OURS`, and their netlink codec.
//!
//! Owns: the rules tagged with our protocol number (`FRA_PROTOCOL`, Linux 4.17+). It must never
//! build a message without that tag: the kernel matches it on delete, so a delete of ours can
//! never remove an administrator's rule.

use std::net::IpAddr;

use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;

/// One `from ADDR/full-length lookup TABLE` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleSpec {
    /// Rule priority (`pref`).
    pub priority: u32,
    /// The host address matched as source (a /32 or /128).
    pub from: IpAddr,
    /// The table to look up.
    pub table: u32,
}

/// A rule read from the kernel that we can describe (`from` a host address, `lookup` a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRule {
    /// The rule.
    pub spec: RuleSpec,
    /// `FRA_PROTOCOL`.
    pub protocol: u8,
}

fn base(spec: &RuleSpec, protocol: u8) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = match spec.from {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.src_len = match spec.from {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    m.header.table = if spec.table < 256 {
        spec.table as u8
    } else {
        252
    };
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Priority(spec.priority));
    m.attributes.push(RuleAttribute::Source(spec.from));
    m.attributes.push(RuleAttribute::Table(spec.table));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
    m
}

/// `RTM_NEWRULE` body.
pub(crate) fn encode_new(spec: &RuleSpec, protocol: u8) -> RuleMessage {
    base(spec, protocol)
}

/// `RTM_DELRULE` body: the full rule including our protocol, so only our rule matches.
pub(crate) fn encode_del(spec: &RuleSpec, protocol: u8) -> RuleMessage {
    base(spec, protocol)
}

/// Reads a rule; `None` for rules that are not a plain `from HOST lookup T` (never ours).
pub(crate) fn decode(m: &RuleMessage) -> Option<ObservedRule> {
    let h = &m.header;
    if h.action != RuleAction::ToTable || h.dst_len != 0 {
        return None;
    }
    let full = match h.family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if h.src_len != full {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut priority = 0;
    let mut from = None;
    let mut protocol = 0u8;
    for a in &m.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Source(s) => from = Some(*s),
            RuleAttribute::Protocol(p) => protocol = (*p).into(),
            // Any other selector (iif, fwmark, ...) makes it a rule we did not write.
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::Destination(_) => return None,
            _ => {}
        }
    }
    Some(ObservedRule {
        spec: RuleSpec {
            priority,
            from: from?,
            table,
        },
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_round_trips_with_our_protocol() {
        let spec = RuleSpec {
            priority: 1000,
            from: "192.168.1.1".parse().unwrap(),
            table: 201_555,
        };
        let back = decode(&encode_new(&spec, 201)).expect("decodes");
        assert_eq!(back.spec, spec);
        assert_eq!(back.protocol, 201);
    }
}
