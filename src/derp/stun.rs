//! STUN for netcheck: parsing a Tailscale binding request (RFC 5389 header with the magic
//! cookie, `SOFTWARE = tailnode`, a final FINGERPRINT) and building the success response
//! with XOR-MAPPED-ADDRESS, sans I/O; plus the UDP task that answers valid requests only.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_a442;
pub const HEADER_LEN: usize = 20;
pub const TRANSACTION_ID_LEN: usize = 12;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// FINGERPRINT is CRC-32 (IEEE) of the message before it, XORed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const SOFTWARE: &[u8] = b"tailnode";
/// Biggest datagram read; real requests are 40 bytes.
const MAX_DATAGRAM: usize = 1500;

pub type TransactionId = [u8; TRANSACTION_ID_LEN];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("not a binding request")]
    NotBindingRequest,
    #[error("malformed attributes")]
    Malformed,
    #[error("SOFTWARE is not tailnode")]
    WrongSoftware,
    #[error("missing or wrong FINGERPRINT")]
    BadFingerprint,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// Parses a Tailscale binding request; returns its transaction id. As strict as Tailscale's
/// own parser: SOFTWARE must be `tailnode` and a valid FINGERPRINT must end the message.
pub fn parse_binding_request(packet: &[u8]) -> Result<TransactionId, StunError> {
    if packet.len() < HEADER_LEN || packet[0] & 0xc0 != 0 || be32(packet, 4) != Some(MAGIC_COOKIE) {
        return Err(StunError::NotStun);
    }
    if be16(packet, 0) != Some(BINDING_REQUEST) {
        return Err(StunError::NotBindingRequest);
    }
    let attrs_len = usize::from(be16(packet, 2).ok_or(StunError::NotStun)?);
    let end = HEADER_LEN + attrs_len;
    if attrs_len % 4 != 0 || packet.len() < end {
        return Err(StunError::Malformed);
    }
    let mut txid = [0u8; TRANSACTION_ID_LEN];
    txid.copy_from_slice(&packet[8..HEADER_LEN]);

    let mut at = HEADER_LEN;
    let mut software_ok = false;
    let mut fingerprint_ok = false;
    while at < end {
        let kind = be16(packet, at).ok_or(StunError::Malformed)?;
        let len = usize::from(be16(packet, at + 2).ok_or(StunError::Malformed)?);
        let value_at = at + 4;
        let value = packet
            .get(value_at..value_at + len)
            .filter(|_| value_at + len <= end)
            .ok_or(StunError::Malformed)?;
        let next = value_at + len.div_ceil(4) * 4;
        match kind {
            ATTR_SOFTWARE => software_ok = value == SOFTWARE,
            ATTR_FINGERPRINT => {
                // Must be the last attribute, over everything before it.
                if len != 4 || next != end {
                    return Err(StunError::BadFingerprint);
                }
                let want = fingerprint(&packet[..at]);
                fingerprint_ok = be32(value, 0) == Some(want);
            }
            _ => {}
        }
        at = next;
    }
    if !software_ok {
        return Err(StunError::WrongSoftware);
    }
    if !fingerprint_ok {
        return Err(StunError::BadFingerprint);
    }
    Ok(txid)
}

/// The binding success response telling the client its address as we saw it.
pub fn binding_response(txid: &TransactionId, addr: SocketAddr) -> Vec<u8> {
    let ip = addr.ip().to_canonical();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut value = vec![0u8];
    match ip {
        IpAddr::V4(v4) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v4.octets().iter().zip(cookie).map(|(a, c)| a ^ c));
        }
        IpAddr::V6(v6) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let pad = cookie.iter().chain(txid.iter());
            value.extend(v6.octets().iter().zip(pad).map(|(a, c)| a ^ c));
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(&cookie);
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(&value);
    out
}

/// A request as a Tailscale client builds it (for tests and fuzz seeds).
pub fn binding_request(txid: &TransactionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    out.extend_from_slice(&20u16.to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_SOFTWARE.to_be_bytes());
    out.extend_from_slice(&(SOFTWARE.len() as u16).to_be_bytes());
    out.extend_from_slice(SOFTWARE);
    let crc = fingerprint(&out);
    out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Reads the XOR-MAPPED-ADDRESS of a binding response to `txid` (the client's side; tests).
pub fn parse_binding_response(txid: &TransactionId, packet: &[u8]) -> Option<SocketAddr> {
    if be16(packet, 0)? != BINDING_SUCCESS
        || be32(packet, 4)? != MAGIC_COOKIE
        || packet.get(8..HEADER_LEN)? != txid
    {
        return None;
    }
    let end = HEADER_LEN + usize::from(be16(packet, 2)?);
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let kind = be16(packet, at)?;
        let len = usize::from(be16(packet, at + 2)?);
        let value = packet.get(at + 4..at + 4 + len)?;
        if kind == ATTR_XOR_MAPPED_ADDRESS && len >= 4 {
            let port = be16(value, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
            let cookie = MAGIC_COOKIE.to_be_bytes();
            let ip = match (value[1], len) {
                (0x01, 8) => {
                    let mut o = [0u8; 4];
                    for (i, b) in o.iter_mut().enumerate() {
                        *b = value[4 + i] ^ cookie[i];
                    }
                    IpAddr::from(o)
                }
                (0x02, 20) => {
                    let pad: Vec<u8> = cookie.iter().chain(txid.iter()).copied().collect();
                    let mut o = [0u8; 16];
                    for (i, b) in o.iter_mut().enumerate() {
                        *b = value[4 + i] ^ pad[i];
                    }
                    IpAddr::from(o)
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Answers valid binding requests on `socket` until `shutdown` resolves. Anything else is
/// dropped silently (a STUN port sees scanners).
pub async fn serve_stun(socket: tokio::net::UdpSocket, shutdown: impl Future<Output = ()> + Send) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (len, from) = tokio::select! {
            _ = &mut shutdown => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors from earlier sends surface here on some systems; keep going.
                    tracing::debug!(%error, "stun receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(txid) = parse_binding_request(&buf[..len]) else {
            continue;
        };
        let response = binding_response(&txid, from);
        if let Err(error) = socket.send_to(&response, from).await {
            tracing::debug!(%error, %from, "stun reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: TransactionId = *b"abcdefghijkl";

    #[test]
    fn request_layout_matches_tailscale() {
        let request = binding_request(&TXID);
        assert_eq!(request.len(), 40);
        assert_eq!(&request[..8], &[0, 1, 0, 20, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&request[20..24], &[0x80, 0x22, 0, 8]);
        assert_eq!(&request[24..32], b"tailnode");
        assert_eq!(&request[32..36], &[0x80, 0x28, 0, 4]);
        let crc = crc32fast::hash(&request[..32]) ^ 0x5354_554e;
        assert_eq!(&request[36..], &crc.to_be_bytes());
        assert_eq!(parse_binding_request(&request), Ok(TXID));
    }

    #[test]
    fn response_carries_the_xor_mapped_v4_address() {
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let response = binding_response(&TXID, addr);
        assert_eq!(&response[..2], &[0x01, 0x01]);
        assert_eq!(&response[2..4], &[0, 12]);
        assert_eq!(&response[8..20], &TXID);
        // Port 32853 = 0x8055; ^ 0x2112 = 0xa147. 192.0.2.1 ^ 21 12 a4 42 = e1 12 a6 43.
        assert_eq!(
            &response[20..],
            &[0, 0x20, 0, 8, 0, 1, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        assert_eq!(parse_binding_response(&TXID, &response), Some(addr));
    }

    #[test]
    fn response_carries_the_xor_mapped_v6_address() {
        let addr: SocketAddr = "[2001:db8::1]:41641".parse().unwrap();
        let response = binding_response(&TXID, addr);
        assert_eq!(&response[2..4], &[0, 24]);
        assert_eq!(&response[20..24], &[0, 0x20, 0, 20]);
        assert_eq!(response[25], 2);
        // First address byte 0x20 ^ 0x21, last 0x01 ^ txid[11] ('l').
        assert_eq!(response[28], 0x20 ^ 0x21);
        assert_eq!(response[43], 0x01 ^ b'l');
        assert_eq!(parse_binding_response(&TXID, &response), Some(addr));
        // A v4-mapped v6 peer is answered as IPv4.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let response = binding_response(&TXID, mapped);
        assert_eq!(
            parse_binding_response(&TXID, &response),
            Some("127.0.0.1:5000".parse().unwrap())
        );
    }

    #[test]
    fn invalid_requests_are_refused() {
        let good = binding_request(&TXID);
        assert_eq!(parse_binding_request(&[]), Err(StunError::NotStun));
        assert_eq!(parse_binding_request(&good[..19]), Err(StunError::NotStun));
        let mut cookie = good.clone();
        cookie[4] ^= 1;
        assert_eq!(parse_binding_request(&cookie), Err(StunError::NotStun));
        let mut top_bits = good.clone();
        top_bits[0] = 0x40;
        assert_eq!(parse_binding_request(&top_bits), Err(StunError::NotStun));
        let mut response_type = good.clone();
        response_type[1] = 0x11;
        assert_eq!(
            parse_binding_request(&response_type),
            Err(StunError::NotBindingRequest)
        );
        let mut software = good.clone();
        software[24] = b'T';
        assert!(parse_binding_request(&software).is_err());
        let mut crc = good.clone();
        crc[39] ^= 1;
        assert_eq!(parse_binding_request(&crc), Err(StunError::BadFingerprint));
        assert_eq!(
            parse_binding_request(&good[..36]),
            Err(StunError::Malformed)
        );
        // No fingerprint at all: SOFTWARE only, length fixed up.
        let mut bare = good[..32].to_vec();
        bare[3] = 12;
        assert_eq!(parse_binding_request(&bare), Err(StunError::BadFingerprint));
        // Trailing bytes past the declared length do not matter.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(parse_binding_request(&trailing), Ok(TXID));
    }
}
