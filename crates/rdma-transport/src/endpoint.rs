//! Queue-pair endpoints: what two RC queue pairs exchange (through the control plane)
//! to connect to each other.

use crate::error::RdmaError;
use crate::proto;

/// One side of an RC connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpEndpoint {
    pub qp_num: u32,
    /// First packet sequence number this QP sends with (24 bits).
    pub psn: u32,
    /// Port GID; for RoCE v2 the IPv4-mapped address.
    pub gid: [u8; 16],
    pub lid: u16,
    /// Active path MTU in bytes: 256, 512, 1024, 2048 or 4096.
    pub mtu: u32,
    /// READs this QP keeps outstanding as requester, or accepts as responder.
    pub max_read_atomic: u8,
}

impl QpEndpoint {
    /// The path MTU both sides can use.
    pub fn common_mtu(&self, other: &QpEndpoint) -> u32 {
        self.mtu.min(other.mtu)
    }
}

impl From<QpEndpoint> for proto::QpEndpoint {
    fn from(e: QpEndpoint) -> Self {
        proto::QpEndpoint {
            qp_num: e.qp_num,
            psn: e.psn,
            gid: e.gid.to_vec(),
            lid: u32::from(e.lid),
            mtu: e.mtu,
            max_read_atomic: u32::from(e.max_read_atomic),
        }
    }
}

impl TryFrom<&proto::QpEndpoint> for QpEndpoint {
    type Error = RdmaError;

    fn try_from(e: &proto::QpEndpoint) -> Result<Self, RdmaError> {
        let bad = |what: &str| RdmaError::Protocol(format!("queue-pair endpoint: {what}"));
        let gid: [u8; 16] = e.gid.as_slice().try_into().map_err(|_| bad("the GID is not 16 bytes"))?;
        if !matches!(e.mtu, 256 | 512 | 1024 | 2048 | 4096) {
            return Err(bad("the MTU is not 256..4096"));
        }
        if e.psn >= 1 << 24 {
            return Err(bad("the PSN is wider than 24 bits"));
        }
        Ok(QpEndpoint {
            qp_num: e.qp_num,
            psn: e.psn,
            gid,
            lid: u16::try_from(e.lid).map_err(|_| bad("the LID is wider than 16 bits"))?,
            mtu: e.mtu,
            max_read_atomic: u8::try_from(e.max_read_atomic.clamp(1, 255)).expect("clamped"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_and_bad_ones_are_refused() {
        let e =
            QpEndpoint { qp_num: 17, psn: 0x12_3456, gid: [7; 16], lid: 0, mtu: 1024, max_read_atomic: 16 };
        let wire = proto::QpEndpoint::from(e);
        let bytes = prost::Message::encode_to_vec(&wire);
        let back: proto::QpEndpoint = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(QpEndpoint::try_from(&back).unwrap(), e);

        for broken in [
            proto::QpEndpoint { gid: vec![1; 15], ..wire.clone() },
            proto::QpEndpoint { mtu: 1500, ..wire.clone() },
            proto::QpEndpoint { psn: 1 << 24, ..wire.clone() },
            proto::QpEndpoint { lid: 1 << 16, ..wire.clone() },
        ] {
            assert!(matches!(QpEndpoint::try_from(&broken), Err(RdmaError::Protocol(_))), "{broken:?}");
        }
    }
}
