//! Verbs on sideway 0.4.3: opening the device, RC queue pairs and their bring-up, and
//! memory registration. Only the basic CQ/QP path is used: Debian 12's rxe provider
//! reports phantom completions on extended CQs.
//!
//! sideway loads libibverbs at run time, so on a host without RDMA every call here
//! answers "no device" ([`RdmaError::NoDevice`]) instead of failing to link.

mod engine;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid, GidType};
use sideway::ibverbs::completion::BasicCompletionQueue;
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{BasicQueuePair, QueuePair, QueuePairAttribute, QueuePairState};

use crate::endpoint::QpEndpoint;
use crate::error::RdmaError;
use crate::server::regions::{Registrar, Registration};

pub use engine::{MAX_QUEUE_DEPTH, SidewayConfig, SidewayEngine};

/// The port every queue pair uses (rxe and most RoCE NICs have one per device).
pub const PORT: u8 = 1;

/// Which device to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The device of this name (`rxe0`, `mlx5_0`).
    Name(String),
    /// The device that has a GID for this address (RoCE v2 preferred). A loopback or
    /// unspecified address picks the first device with an IPv4 RoCE v2 GID.
    Ip(IpAddr),
}

/// An open device: context, protection domain and the GID its queue pairs use.
pub struct Device {
    name: String,
    context: Arc<DeviceContext>,
    pd: Arc<ProtectionDomain>,
    gid: Gid,
    gid_index: u8,
    mtu: Mtu,
    /// Outstanding READs a QP may answer (responder) / issue (requester).
    max_dest_read_atomic: u8,
    max_read_atomic: u8,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("gid_index", &self.gid_index)
            .field("mtu", &mtu_bytes(self.mtu))
            .finish_non_exhaustive()
    }
}

/// A GID-table entry we could use, scored: RoCE v2 over RoCE v1/IB, IPv4-mapped first.
fn gid_score(entry_type: GidType, gid: &Gid) -> u8 {
    let ipv4 = Ipv6Addr::from(gid.raw).to_ipv4_mapped().is_some();
    match (entry_type, ipv4) {
        (GidType::RoceV2, true) => 3,
        (GidType::RoceV2, false) => 2,
        _ => 1,
    }
}

fn gid_matches_ip(gid: &Gid, ip: IpAddr) -> bool {
    let addr = Ipv6Addr::from(gid.raw);
    match ip {
        IpAddr::V4(v4) => addr.to_ipv4_mapped() == Some(v4),
        IpAddr::V6(v6) => addr == v6,
    }
}

impl Device {
    /// Opens the device `choice` names. [`RdmaError::NoDevice`] when there is none (no
    /// libibverbs, no device, no matching GID).
    pub fn open(choice: &DeviceChoice) -> Result<Arc<Device>, RdmaError> {
        let no = |why: String| RdmaError::NoDevice(why);
        let list = DeviceList::new().map_err(|e| no(format!("listing RDMA devices: {e}")))?;
        let mut seen = Vec::new();
        for device in list.iter() {
            let name = device.name();
            seen.push(name.clone());
            if let DeviceChoice::Name(wanted) = choice
                && &name != wanted
            {
                continue;
            }
            let context = device.open().map_err(|e| no(format!("opening {name}: {e}")))?;
            let table = context.query_gid_table().map_err(|e| no(format!("{name}: GID table: {e}")))?;
            let best = table
                .iter()
                .filter(|e| e.port_num() == u32::from(PORT))
                .filter(|e| match choice {
                    DeviceChoice::Ip(ip) if !(ip.is_loopback() || ip.is_unspecified()) => {
                        gid_matches_ip(&e.gid(), *ip)
                    }
                    DeviceChoice::Ip(_) => e.gid_type() == GidType::RoceV2,
                    DeviceChoice::Name(_) => true,
                })
                .max_by_key(|e| (gid_score(e.gid_type(), &e.gid()), std::cmp::Reverse(e.gid_index())));
            let Some(entry) = best else { continue };
            let gid_index =
                u8::try_from(entry.gid_index()).map_err(|_| no(format!("{name}: GID index > 255")))?;
            let port = context.query_port(PORT).map_err(|e| no(format!("{name}: port {PORT}: {e}")))?;
            let attr = context.query_device().map_err(|e| no(format!("{name}: device attributes: {e}")))?;
            let pd = context.alloc_pd().map_err(|e| no(format!("{name}: protection domain: {e}")))?;
            let clamp = |n: i32| u8::try_from(n.clamp(1, 255)).expect("clamped");
            return Ok(Arc::new(Device {
                name,
                gid: entry.gid(),
                gid_index,
                mtu: port.active_mtu(),
                max_dest_read_atomic: clamp(attr.max_qp_rd_atom()),
                max_read_atomic: clamp(attr.max_qp_init_rd_atom()),
                context,
                pd,
            }));
        }
        Err(no(match choice {
            DeviceChoice::Name(name) => format!("no RDMA device {name} (devices: {seen:?})"),
            DeviceChoice::Ip(ip) => format!("no RDMA device has a GID for {ip} (devices: {seen:?})"),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A completion queue of `entries` (basic, not extended: see the module docs).
    pub(crate) fn new_cq(&self, entries: u32) -> Result<Arc<BasicCompletionQueue>, RdmaError> {
        self.context
            .create_cq_builder()
            .setup_cqe(entries)
            .build()
            .map_err(|e| RdmaError::Transfer(format!("creating a completion queue: {e}")))
    }

    /// A new RC queue pair in RESET on the device's protection domain, both queues on `cq`.
    pub(crate) fn new_qp(
        &self,
        cq: &Arc<BasicCompletionQueue>,
        max_send_wr: u32,
    ) -> Result<BasicQueuePair, RdmaError> {
        self.new_qp_in(&self.pd, cq, max_send_wr)
    }

    /// A new protection domain: what is registered in it can be READ only through
    /// queue pairs of the same domain.
    pub(crate) fn alloc_pd(&self) -> Result<Arc<ProtectionDomain>, RdmaError> {
        self.context
            .alloc_pd()
            .map_err(|e| RdmaError::Transfer(format!("allocating a protection domain: {e}")))
    }

    /// The device's own protection domain.
    pub(crate) fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// A new RC queue pair in RESET on `pd`, both queues on `cq`.
    pub(crate) fn new_qp_in(
        &self,
        pd: &Arc<ProtectionDomain>,
        cq: &Arc<BasicCompletionQueue>,
        max_send_wr: u32,
    ) -> Result<BasicQueuePair, RdmaError> {
        pd.create_qp_builder()
            .setup_max_send_wr(max_send_wr)
            .setup_max_recv_wr(1)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_send_cq(Arc::clone(cq))
            .setup_recv_cq(Arc::clone(cq))
            .build()
            .map_err(|e| RdmaError::Transfer(format!("creating a queue pair: {e}")))
    }

    /// This side's endpoint for `qp` (which starts sending at `psn`).
    pub(crate) fn endpoint(&self, qp: &BasicQueuePair, psn: u32, max_read_atomic: u8) -> QpEndpoint {
        QpEndpoint {
            qp_num: qp.qp_number(),
            psn,
            gid: self.gid.raw,
            lid: 0,
            mtu: mtu_bytes(self.mtu),
            max_read_atomic,
        }
    }

    /// Brings `qp` through INIT, RTR and RTS towards `remote`. `access` is what the
    /// remote side may do to our memory through this QP (REMOTE_READ on the server,
    /// nothing on a client).
    pub(crate) fn connect(
        &self,
        qp: &mut BasicQueuePair,
        local: &QpEndpoint,
        remote: &QpEndpoint,
        access: AccessFlags,
    ) -> Result<(), RdmaError> {
        let failed =
            |step: &str, e: &dyn std::fmt::Display| RdmaError::Transfer(format!("QP to {step}: {e}"));
        let mut init = QueuePairAttribute::new();
        init.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(PORT)
            .setup_access_flags(access);
        qp.modify(&init).map_err(|e| failed("INIT", &e))?;

        let mut path = AddressHandleAttribute::new();
        let remote_gid = Gid { raw: remote.gid };
        path.setup_port(PORT).setup_grh(&remote_gid, 0, self.gid_index, 64, 0);
        if remote.lid != 0 {
            path.setup_dest_lid(remote.lid);
        }
        let mut rtr = QueuePairAttribute::new();
        rtr.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(mtu_of(local.common_mtu(remote)))
            .setup_dest_qp_num(remote.qp_num)
            .setup_rq_psn(remote.psn)
            // READs this QP answers at once; 0 would fail every READ.
            .setup_max_dest_read_atomic(self.max_dest_read_atomic)
            .setup_min_rnr_timer(12)
            .setup_address_vector(&path);
        qp.modify(&rtr).map_err(|e| failed("RTR", &e))?;

        let mut rts = QueuePairAttribute::new();
        rts.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(local.psn)
            // ~67 ms per try, 7 tries: a vanished peer fails a READ in well under a second.
            .setup_timeout(14)
            .setup_retry_cnt(7)
            .setup_rnr_retry(7)
            // READs this QP issues at once: what both ends allow.
            .setup_max_read_atomic(local.max_read_atomic.min(remote.max_read_atomic).max(1));
        qp.modify(&rts).map_err(|e| failed("RTS", &e))
    }

    /// Registers `len` bytes at `ptr` with `access` on the device's protection domain.
    ///
    /// # Safety
    /// The memory must stay mapped (and, for LOCAL_WRITE, not be otherwise borrowed while
    /// the device writes) until the returned region is dropped.
    pub(crate) unsafe fn register(
        &self,
        ptr: *mut u8,
        len: usize,
        access: AccessFlags,
    ) -> std::io::Result<Arc<MemoryRegion>> {
        // SAFETY: forwarded to the caller.
        unsafe { register_in(&self.pd, ptr, len, access) }
    }

    /// The GID-table index queue pairs of this device send from.
    #[cfg(feature = "async-rdma")]
    pub(crate) fn gid_index(&self) -> u8 {
        self.gid_index
    }

    /// The port's active MTU in bytes.
    #[cfg(feature = "async-rdma")]
    pub(crate) fn mtu_bytes(&self) -> u32 {
        mtu_bytes(self.mtu)
    }

    /// Requested READs a queue pair of this device may keep outstanding.
    pub(crate) fn max_read_atomic(&self) -> u8 {
        self.max_read_atomic
    }

    /// READs a queue pair of this device answers at once.
    pub(crate) fn max_dest_read_atomic(&self) -> u8 {
        self.max_dest_read_atomic
    }
}

fn mtu_bytes(mtu: Mtu) -> u32 {
    match mtu {
        Mtu::Mtu256 => 256,
        Mtu::Mtu512 => 512,
        Mtu::Mtu1024 => 1024,
        Mtu::Mtu2048 => 2048,
        Mtu::Mtu4096 => 4096,
    }
}

/// `bytes` is one of the five MTUs ([`QpEndpoint`] conversion checks it).
fn mtu_of(bytes: u32) -> Mtu {
    match bytes {
        256 => Mtu::Mtu256,
        512 => Mtu::Mtu512,
        1024 => Mtu::Mtu1024,
        2048 => Mtu::Mtu2048,
        _ => Mtu::Mtu4096,
    }
}

/// A random 24-bit starting PSN.
pub(crate) fn random_psn() -> u32 {
    rand::random::<u32>() & 0x00ff_ffff
}

/// Registers `len` bytes at `ptr` with `access` on `pd`; the error keeps the errno, so
/// a caller can tell a refused pin (EFAULT, EPERM) from a memory limit (ENOMEM).
///
/// # Safety
/// As [`Device::register`].
unsafe fn register_in(
    pd: &Arc<ProtectionDomain>,
    ptr: *mut u8,
    len: usize,
    access: AccessFlags,
) -> std::io::Result<Arc<MemoryRegion>> {
    // SAFETY: forwarded to the caller.
    unsafe { pd.reg_mr(ptr as usize, len, access) }.map_err(|e| {
        // The errno itself, not a message around it: callers decide on it.
        std::io::Error::last_os_error().raw_os_error().filter(|&errno| errno != 0).map_or_else(
            || std::io::Error::other(format!("ibv_reg_mr of {len} bytes: {e}")),
            std::io::Error::from_raw_os_error,
        )
    })
}

/// Registers server memory REMOTE_READ only, on one protection domain: the device's
/// (what `volume` exposure sessions' queue pairs share) or one session's own.
#[derive(Debug)]
pub struct DeviceRegistrar {
    pd: Arc<ProtectionDomain>,
}

impl DeviceRegistrar {
    /// On the device's own protection domain.
    pub fn new(device: &Device) -> Self {
        Self { pd: Arc::clone(&device.pd) }
    }

    /// On `pd` (a session's own).
    pub(crate) fn on(pd: Arc<ProtectionDomain>) -> Self {
        Self { pd }
    }
}

struct DeviceRegistration(Arc<MemoryRegion>);

impl Registration for DeviceRegistration {
    fn rkey(&self) -> u32 {
        self.0.rkey()
    }
}

impl Registrar for DeviceRegistrar {
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> std::io::Result<Box<dyn Registration>> {
        // SAFETY: the caller keeps the memory mapped until the registration is dropped;
        // REMOTE_READ only: nobody may write through it.
        let region = unsafe { register_in(&self.pd, ptr, len, AccessFlags::RemoteRead) }?;
        Ok(Box::new(DeviceRegistration(region)))
    }
}
