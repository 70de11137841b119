//! gobgp's `-j` output shapes.
//!
//! gobgp prints API messages with Go's `encoding/json` on the generated structs, not with the
//! protobuf JSON mapping: fields in declaration order under their proto names, zero values
//! left out, present sub-messages kept even when empty, enums as numbers, bytes as base64.
//! [`message`] reproduces that by walking the message through its descriptor. Route listings
//! use gobgp's own path shape (`nlri`, `age`, `best`, `attrs`...) built by [`rib`].

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

use super::format::{nlri_text, Attr};
use crate::api::{apipb, DESCRIPTOR_SET};

/// Errors producing JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptor set does not decode (a build problem).
    #[error("API descriptor: {0}")]
    Descriptor(String),
    /// The message type is not in the descriptor set.
    #[error("unknown message type {0}")]
    UnknownType(String),
    /// The message does not decode with its descriptor.
    #[error("decoding {0}: {1}")]
    Decode(String, prost::DecodeError),
}

/// A JSON string as Go's encoder writes it (it escapes `<`, `>`, `&`, U+2028 and U+2029).
pub fn string(s: &str) -> String {
    let mut out = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    for (from, to) in [
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u{2028}", "\\u2028"),
        ("\u{2029}", "\\u2029"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// Go's `json.Marshal` of the generated struct for `msg` (an `apipb` message type `name`).
pub fn message<M: Message>(name: &str, msg: &M) -> Result<String, JsonError> {
    let pool =
        DescriptorPool::decode(DESCRIPTOR_SET).map_err(|e| JsonError::Descriptor(e.to_string()))?;
    let full = format!("apipb.{name}");
    let desc = pool
        .get_message_by_name(&full)
        .ok_or_else(|| JsonError::UnknownType(full.clone()))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .map_err(|e| JsonError::Decode(full, e))?;
    let mut out = String::new();
    write_message(&dynamic, &mut out);
    Ok(out)
}

/// Go's `json.Marshal` of a slice of messages.
pub fn messages<M: Message>(name: &str, msgs: &[M]) -> Result<String, JsonError> {
    let items = msgs
        .iter()
        .map(|m| message(name, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("[{}]", items.join(",")))
}

fn write_message(m: &DynamicMessage, out: &mut String) {
    out.push('{');
    let mut first = true;
    for field in m.descriptor().fields() {
        // Go's omitempty: unset sub-messages, zero scalars and empty lists are left out.
        if !m.has_field(&field) {
            continue;
        }
        let value = m.get_field(&field);
        if let Value::List(l) = value.as_ref() {
            if l.is_empty() {
                continue;
            }
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&string(field.name()));
        out.push(':');
        write_value(value.as_ref(), out);
    }
    out.push('}');
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I32(n) => out.push_str(&n.to_string()),
        Value::I64(n) => out.push_str(&n.to_string()),
        Value::U32(n) => out.push_str(&n.to_string()),
        Value::U64(n) => out.push_str(&n.to_string()),
        Value::F32(n) => out.push_str(&n.to_string()),
        Value::F64(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&string(s)),
        Value::Bytes(b) => out.push_str(&string(
            &base64::engine::general_purpose::STANDARD.encode(b),
        )),
        Value::EnumNumber(n) => out.push_str(&n.to_string()),
        Value::Message(m) => write_message(m, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        // No map fields in the messages we print; Go would sort the keys.
        Value::Map(_) => out.push_str("{}"),
    }
}

fn join<I: IntoIterator<Item = String>>(items: I) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}

/// One attribute in gobgp's JSON shape (its `MarshalJSON` methods).
pub fn attribute(a: &Attr) -> String {
    match a {
        Attr::Origin(o) => format!("{{\"type\":1,\"value\":{o}}}"),
        Attr::AsPath(segs) => format!(
            "{{\"type\":2,\"as_paths\":[{}]}}",
            join(segs.iter().map(|(t, asns)| format!(
                "{{\"segment_type\":{t},\"num\":{},\"asns\":[{}]}}",
                asns.len(),
                join(asns.iter().map(|n| n.to_string()))
            )))
        ),
        Attr::NextHop(n) => format!("{{\"type\":3,\"nexthop\":{}}}", string(n)),
        Attr::Med(m) => format!("{{\"type\":4,\"metric\":{m}}}"),
        Attr::LocalPref(l) => format!("{{\"type\":5,\"value\":{l}}}"),
        Attr::AtomicAggregate => "{\"type\":6}".into(),
        Attr::Aggregator(asn, addr) => {
            format!("{{\"type\":7,\"as\":{asn},\"address\":{}}}", string(addr))
        }
        Attr::Communities(c) => format!(
            "{{\"type\":8,\"communities\":[{}]}}",
            join(c.iter().map(|v| v.to_string()))
        ),
        Attr::OriginatorId(i) => format!("{{\"type\":9,\"value\":{}}}", string(i)),
        Attr::ClusterList(l) => format!(
            "{{\"type\":10,\"value\":[{}]}}",
            join(l.iter().map(|s| string(s)))
        ),
        Attr::MpReach(f, nh, nlris) => {
            let next_hop = nh.first().cloned().unwrap_or_else(|| {
                match f.afi {
                    1 => "0.0.0.0",
                    2 => "::",
                    _ => "fictitious",
                }
                .to_string()
            });
            format!(
                "{{\"type\":14,\"nexthop\":{},\"afi\":{},\"safi\":{},\"value\":[{}]}}",
                string(&next_hop),
                f.afi,
                f.safi,
                join(
                    nlris
                        .iter()
                        .map(|p| format!("{{\"prefix\":{}}}", string(p)))
                )
            )
        }
        Attr::LargeCommunities(l) => {
            format!(
                "{{\"type\":32,\"value\":[{}]}}",
                join(l.iter().map(|(a, b, c)| format!(
                    "{{\"ASN\":{a},\"LocalData1\":{b},\"LocalData2\":{c}}}"
                )))
            )
        }
        Attr::Unknown(flags, t, v) => format!(
            "{{\"flags\":{flags},\"type\":{t},\"value\":{}}}",
            if v.is_empty() {
                "null".to_string()
            } else {
                string(&base64::engine::general_purpose::STANDARD.encode(v))
            }
        ),
    }
}

/// One path in gobgp's `apiutil.Path` shape.
pub fn path(p: &apipb::Path) -> String {
    let nlri = p
        .nlri
        .as_ref()
        .and_then(nlri_text)
        .map(|s| format!("{{\"prefix\":{}}}", string(&s)))
        .unwrap_or_else(|| "null".into());
    let attrs = join(
        p.pattrs
            .iter()
            .filter_map(Attr::from_any)
            .map(|a| attribute(&a)),
    );
    let mut s = format!(
        "{{\"nlri\":{nlri},\"age\":{},\"best\":{},\"attrs\":[{attrs}],\"stale\":{}",
        p.age.as_ref().map_or(0, |a| a.seconds),
        p.best,
        p.stale
    );
    if p.is_withdraw {
        s += ",\"withdrawal\":true";
    }
    if let Ok(ip) = p.source_id.parse::<std::net::IpAddr>() {
        s += &format!(",\"source-id\":{}", string(&ip.to_string()));
    }
    if let Ok(ip) = p.neighbor_ip.parse::<std::net::IpAddr>() {
        s += &format!(",\"neighbor-ip\":{}", string(&ip.to_string()));
    }
    s.push('}');
    s
}

/// A route listing: an object from prefix (keys sorted, as Go sorts map keys) to its paths.
pub fn rib(dsts: &[apipb::Destination]) -> String {
    let map: BTreeMap<&str, &apipb::Destination> =
        dsts.iter().map(|d| (d.prefix.as_str(), d)).collect();
    format!(
        "{{{}}}",
        join(map.iter().map(|(k, d)| format!(
            "{}:[{}]",
            string(k),
            join(d.paths.iter().map(path))
        )))
    )
}

/// gobgp's error object for `-j`.
pub fn error(msg: &str) -> String {
    format!("{{\"error\":{}}}", string(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_are_left_out_and_present_empty_messages_kept() {
        let p = apipb::Peer {
            conf: Some(apipb::PeerConf {
                peer_asn: 65002,
                neighbor_address: "10.0.0.2".into(),
                ..Default::default()
            }),
            route_server: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            message("Peer", &p).expect("json"),
            r#"{"conf":{"neighbor_address":"10.0.0.2","peer_asn":65002},"route_server":{}}"#
        );
    }

    #[test]
    fn go_escapes_html_characters() {
        assert_eq!(string("a<b>&"), r#""a\u003cb\u003e\u0026""#);
    }

    #[test]
    fn as_path_json_counts_its_numbers() {
        let a = Attr::AsPath(vec![(2, vec![65002, 65003])]);
        assert_eq!(
            attribute(&a),
            r#"{"type":2,"as_paths":[{"segment_type":2,"num":2,"asns":[65002,65003]}]}"#
        );
    }
}
