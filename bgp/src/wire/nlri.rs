//! Prefix encoding shared by the NLRI, Withdrawn Routes and MP_(UN)REACH fields
//! (RFC 4271 section 4.3, RFC 4760 section 5): a length in bits, then just enough octets.
//!
//! This is the hottest code of the receive path (a full UPDATE carries ~800 /32s), so it is a
//! plain loop over the slice rather than nom combinators, and it allocates nothing beyond the
//! output vector. It never trusts a length octet past the bytes actually present.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a prefix list did not parse; the caller picks the NOTIFICATION that fits the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    /// A prefix length larger than the address (more than 32 or 128 bits).
    #[error("prefix length {0} too long for the address family")]
    LengthTooLong(u8),
    /// The last prefix runs past the end of the field.
    #[error("prefix truncated by the end of the field")]
    Truncated,
}

/// Decode a field of IPv4 prefixes, appending to `out`. Host bits beyond the length are cleared.
pub fn decode_v4(mut buf: &[u8], out: &mut Vec<Ipv4Net>) -> Result<(), NlriError> {
    // A prefix takes at least one octet; most are /32s of five. Reserve for the common case
    // only: the bound comes from the real input length, never from a length field.
    out.reserve(buf.len() / 5 + 1);
    while let Some((&bits, rest)) = buf.split_first() {
        if bits > 32 {
            return Err(NlriError::LengthTooLong(bits));
        }
        let n = usize::from(bits).div_ceil(8);
        let (addr, rest) = rest.split_at_checked(n).ok_or(NlriError::Truncated)?;
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(addr);
        let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
        let ip = Ipv4Addr::from(u32::from_be_bytes(octets) & mask);
        out.push(Ipv4Net::new(ip, bits).map_err(|_| NlriError::LengthTooLong(bits))?);
        buf = rest;
    }
    Ok(())
}

/// Decode a field of IPv6 prefixes, appending to `out`. Host bits beyond the length are cleared.
pub fn decode_v6(mut buf: &[u8], out: &mut Vec<Ipv6Net>) -> Result<(), NlriError> {
    out.reserve(buf.len() / 17 + 1);
    while let Some((&bits, rest)) = buf.split_first() {
        if bits > 128 {
            return Err(NlriError::LengthTooLong(bits));
        }
        let n = usize::from(bits).div_ceil(8);
        let (addr, rest) = rest.split_at_checked(n).ok_or(NlriError::Truncated)?;
        let mut octets = [0u8; 16];
        octets[..n].copy_from_slice(addr);
        let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
        let ip = Ipv6Addr::from(u128::from_be_bytes(octets) & mask);
        out.push(Ipv6Net::new(ip, bits).map_err(|_| NlriError::LengthTooLong(bits))?);
        buf = rest;
    }
    Ok(())
}

/// Decode IPv4 prefixes into the family-independent type (for MP_(UN)REACH).
pub fn decode_v4_any(buf: &[u8], out: &mut Vec<IpNet>) -> Result<(), NlriError> {
    let mut v4 = Vec::new();
    decode_v4(buf, &mut v4)?;
    out.extend(v4.into_iter().map(IpNet::V4));
    Ok(())
}

/// Decode IPv6 prefixes into the family-independent type (for MP_(UN)REACH).
pub fn decode_v6_any(buf: &[u8], out: &mut Vec<IpNet>) -> Result<(), NlriError> {
    let mut v6 = Vec::new();
    decode_v6(buf, &mut v6)?;
    out.extend(v6.into_iter().map(IpNet::V6));
    Ok(())
}

/// Octets one prefix takes on the wire.
pub fn wire_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

/// Append one prefix in wire form. Host bits are written as zero.
pub fn encode(prefix: &IpNet, out: &mut BytesMut) {
    let bits = prefix.prefix_len();
    let n = usize::from(bits).div_ceil(8);
    out.put_u8(bits);
    match prefix.trunc() {
        IpNet::V4(p) => out.put_slice(p.addr().octets().get(..n).unwrap_or_default()),
        IpNet::V6(p) => out.put_slice(p.addr().octets().get(..n).unwrap_or_default()),
    }
}

/// Append one IPv4 prefix in wire form.
pub fn encode_v4(prefix: &Ipv4Net, out: &mut BytesMut) {
    encode(&IpNet::V4(*prefix), out);
}
