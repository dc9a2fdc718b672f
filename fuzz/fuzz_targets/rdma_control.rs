//! RDMA control-plane requests as the server receives them (protobuf bytes from any
//! client that reaches the gRPC port): the first byte picks the message.
//!
//! - OpenSession: the client's queue-pair endpoint converts or is refused; one that
//!   converts goes to protobuf and back unchanged;
//! - Locate: every fid is located or refused; with a session limited to one file (the
//!   token's `fid` claim, here the request's first fid) only ids naming that same
//!   needle and cookie get through, and the first always does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::FileId;
use prost::Message;
use rdma_transport::QpEndpoint;
use rdma_transport::proto;
use rdma_transport::server::locate_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, message)) = input.split_first() else { return };
    if selector & 1 == 0 {
        let Ok(request) = proto::OpenSessionRequest::decode(message) else { return };
        let Some(client) = &request.client else { return };
        if let Ok(endpoint) = QpEndpoint::try_from(client) {
            assert!(endpoint.psn < 1 << 24 && endpoint.max_read_atomic >= 1);
            let wire = proto::QpEndpoint::from(endpoint);
            let bytes = wire.encode_to_vec();
            let back = proto::QpEndpoint::decode(&bytes[..]).expect("our own encoding decodes");
            assert_eq!(QpEndpoint::try_from(&back).ok(), Some(endpoint));
        }
    } else {
        let Ok(request) = proto::LocateRequest::decode(message) else { return };
        let only: Option<FileId> = request.fids.first().and_then(|f| f.parse().ok());
        for fid in &request.fids {
            let open = locate_target(fid, None);
            let limited = locate_target(fid, only.as_ref());
            assert_eq!(open.is_err(), fid.parse::<FileId>().is_err());
            if let (Ok(located), Some(allowed)) = (&limited, &only) {
                assert_eq!(
                    (located.volume, located.needle_id(), located.cookie),
                    (allowed.volume, allowed.needle_id(), allowed.cookie)
                );
            }
        }
        if let Some(first) = request.fids.first() {
            assert_eq!(locate_target(first, only.as_ref()).is_ok(), first.parse::<FileId>().is_ok());
        }
    }
});
