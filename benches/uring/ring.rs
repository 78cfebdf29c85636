//! The io_uring engine: one ring on one thread, no readiness at all.
//!
//! - The listener has one multishot accept outstanding.
//! - The upgrade uses plain receives and sends into a per-connection
//!   buffer that is freed once the relay starts; the backend is reached
//!   with an io_uring connect.
//! - While relaying, each socket has one multishot receive outstanding
//!   that picks its buffer from a ring of provided buffers registered with
//!   the kernel (`IORING_REGISTER_PBUF_RING`). A completed receive is
//!   examined in place and sent from the same buffer, which goes back to the
//!   ring when the send completes: one copy in, one copy out, as on epoll.
//! - Every turn of the loop submits what the last completions asked for and
//!   waits for the next ones in one `io_uring_enter`. A send to a socket
//!   with room completes during that call, so waiting for "one completion"
//!   would return at once with only the sends' own, and every crossing
//!   would take two calls. The turn therefore asks for one completion more
//!   than the sends and shutdowns it submitted, with a minimum wait
//!   (`IORING_ENTER_EXT_ARG` `min_wait_usec`, Linux 6.12): past
//!   `--batch-wait-us` it returns with whatever is there. Those
//!   completions only recycle buffers, so waiting on them delays nothing
//!   unless a send was short and more bytes queue behind it.
//!
//! A connection's slot is reused only once none of its operations is
//! outstanding, so a completion always finds the connection it was for.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use wsgate::relay::state::DirectionState;

use crate::{examine, head_end, states, switches, Settings, MAX_CONNECTIONS, MAX_HEAD, READ_LEN};

/// Submission queue entries; completions get four times as many slots.
const ENTRIES: u32 = 1024;
/// Provided buffers (a power of two, as the kernel requires).
const BUFFERS: u16 = 2048;
/// The provided buffers' group.
const GROUP: u16 = 0;
/// `user_data` of the listener's accept.
const ACCEPT: u64 = u64::MAX;

/// What an operation was for; the low byte of its `user_data`, above it
/// the connection's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Receiving the client's upgrade request into the head buffer.
    ReadRequest,
    /// Connecting to the backend.
    Connect,
    /// Sending the request (and any bytes after it) to the backend.
    SendRequest,
    /// Receiving the backend's answer into the head buffer.
    ReadAnswer,
    /// Sending the answer to the client.
    SendAnswer,
    /// The multishot receive of a direction's source (0: client).
    Recv(usize),
    /// Sending a buffer to a direction's destination.
    Send(usize),
    /// Shutting the write side of a direction's destination.
    Shut(usize),
}

impl Op {
    fn code(self) -> u64 {
        match self {
            Op::ReadRequest => 1,
            Op::Connect => 2,
            Op::SendRequest => 3,
            Op::ReadAnswer => 4,
            Op::SendAnswer => 5,
            Op::Recv(d) => 6 + d as u64,
            Op::Send(d) => 8 + d as u64,
            Op::Shut(d) => 10 + d as u64,
        }
    }

    fn from_code(code: u64) -> Option<Op> {
        Some(match code {
            1 => Op::ReadRequest,
            2 => Op::Connect,
            3 => Op::SendRequest,
            4 => Op::ReadAnswer,
            5 => Op::SendAnswer,
            6 | 7 => Op::Recv(code as usize - 6),
            8 | 9 => Op::Send(code as usize - 8),
            10 | 11 => Op::Shut(code as usize - 10),
            _ => return None,
        })
    }
}

fn user_data(slot: usize, op: Op) -> u64 {
    (slot as u64) << 8 | op.code()
}

/// The ring of provided buffers: the kernel takes buffers from it as data
/// arrives; the relay gives each back once it has been sent on.
struct Buffers {
    /// The ring's entries, page-aligned, shared with the kernel.
    entries: *mut types::BufRingEntry,
    entries_layout: Layout,
    /// The buffers themselves, `READ_LEN` bytes each.
    memory: Box<[u8]>,
    /// The tail as the relay has advanced it; published to the kernel by
    /// [`Buffers::publish`].
    tail: u16,
}

impl Buffers {
    /// Allocates the buffers and registers the ring with `ring`.
    fn register(ring: &IoUring) -> io::Result<Buffers> {
        let size = usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>();
        let entries_layout = Layout::from_size_align(size, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::other("cannot allocate the buffer ring"));
        }
        let mut buffers = Buffers {
            entries,
            entries_layout,
            memory: vec![0u8; usize::from(BUFFERS) * READ_LEN].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the ring's memory lives as long as `buffers`, which is
        // dropped only after the ring (see `Engine`'s field order) and
        // is never moved (it is a heap allocation).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)?;
        }
        for bid in 0..BUFFERS {
            buffers.give_back(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// Puts buffer `bid` back at the ring's tail (seen by the kernel after
    /// the next [`Buffers::publish`]).
    fn give_back(&mut self, bid: u16) {
        let at = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `at` is within the ring's `BUFFERS` entries, and the
        // kernel reads an entry only once the tail is published past it.
        let entry = unsafe { &mut *self.entries.add(at) };
        entry.set_addr(self.memory[usize::from(bid) * READ_LEN..].as_ptr() as u64);
        entry.set_len(READ_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Lets the kernel see the buffers given back so far.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry, valid while
        // `self` is; the kernel reads it atomically.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The `len` bytes received into buffer `bid`.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * READ_LEN;
        &self.memory[start..start + len]
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with this layout; the ring that
        // used it is gone (dropped first).
        unsafe { dealloc(self.entries.cast(), self.entries_layout) }
    }
}

/// Where one direction stands while relaying.
struct Flow {
    state: DirectionState,
    /// Received buffers (id, length) waiting for the send in progress.
    queue: VecDeque<(u16, u32)>,
    /// The buffer being sent: id, bytes sent, length.
    sending: Option<(u16, u32, u32)>,
    /// The source ended; the destination is shut once the queue is empty.
    ended: bool,
    /// The multishot receive stopped for want of buffers and must be armed
    /// again once some are given back.
    starved: bool,
}

/// One proxied connection.
struct Conn {
    client: RawFd,
    /// -1 until the socket exists.
    backend: RawFd,
    /// The upgrade's request, then its answer; empty (and freed) while
    /// relaying.
    head: Vec<u8>,
    /// Bytes of `head` sent so far.
    head_sent: usize,
    /// Where the head in `head` ends, once known.
    head_end: usize,
    flows: [Flow; 2],
    /// Destinations shut (both: the connection is done).
    shut: [bool; 2],
    /// Operations submitted and not yet completed for good.
    inflight: u32,
    /// An error or a refused upgrade ended the connection; its sockets are
    /// shut both ways and it is freed once nothing is outstanding.
    dead: bool,
}

impl Conn {
    /// The socket a direction reads from (0: client to backend).
    fn source(&self, d: usize) -> RawFd {
        if d == 0 {
            self.client
        } else {
            self.backend
        }
    }

    fn destination(&self, d: usize) -> RawFd {
        self.source(1 - d)
    }
}

/// The loop's state: the ring, the connections, the buffers.
struct Engine {
    // Field order matters: the ring is dropped before the buffers it uses.
    ring: IoUring,
    buffers: Buffers,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections whose receive starved, to arm again.
    starved: Vec<(usize, usize)>,
    backend: Sockaddr,
    listener: TcpListener,
    accepted: u64,
    max_accepts: u64,
    /// Completions of one turn, taken off the queue before any is handled.
    batch: Vec<(u64, i32, u32)>,
    /// Sends and shutdowns submitted since the last wait: their
    /// completions usually arrive with the submission itself.
    quick: usize,
    /// The minimum wait for the turn's extra completion, in µs; 0 when
    /// off or the kernel lacks it.
    batch_wait_us: u32,
}

/// The backend's address as the kernel wants it; kept in the engine so
/// that it outlives every connect.
struct Sockaddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
    family: libc::c_int,
}

impl Sockaddr {
    fn new(addr: SocketAddr) -> Sockaddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let (len, family) = match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in.
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (std::mem::size_of::<libc::sockaddr_in>(), libc::AF_INET)
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                (std::mem::size_of::<libc::sockaddr_in6>(), libc::AF_INET6)
            }
        };
        Sockaddr {
            storage,
            len: len as libc::socklen_t,
            family,
        }
    }
}

/// Runs the relay until the process is stopped (or `max_accepts`
/// connections have come and gone).
pub fn run(settings: Settings) -> io::Result<()> {
    let listener = TcpListener::bind(settings.listen)?;
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(ENTRIES * 4)
        .setup_single_issuer()
        .setup_defer_taskrun();
    // DEFER_TASKRUN (6.1) runs completions only when the loop asks for
    // them, in its one io_uring_enter; an older kernel gets a plain ring.
    let ring = match builder.build(ENTRIES) {
        Ok(ring) => ring,
        Err(_) => IoUring::builder()
            .setup_cqsize(ENTRIES * 4)
            .build(ENTRIES)?,
    };
    let batch_wait_us = if ring.params().is_feature_min_timeout() {
        settings.batch_wait_us
    } else {
        0
    };
    let buffers = Buffers::register(&ring)?;
    eprintln!(
        "uring (io_uring): relaying {} to {}",
        listener.local_addr()?,
        settings.backend
    );
    let mut engine = Engine {
        ring,
        buffers,
        conns: (0..MAX_CONNECTIONS).map(|_| None).collect(),
        free: (0..MAX_CONNECTIONS).rev().collect(),
        starved: Vec::with_capacity(MAX_CONNECTIONS * 2),
        backend: Sockaddr::new(settings.backend),
        listener,
        accepted: 0,
        max_accepts: settings.max_accepts,
        batch: Vec::with_capacity(ENTRIES as usize * 4),
        quick: 0,
        batch_wait_us,
    };
    engine.arm_accept()?;
    engine.run()
}

impl Engine {
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // A full queue is submitted to make room; the kernel takes at
        // least one entry per submit, so a few turns always suffice.
        for _ in 0..16 {
            // SAFETY: every buffer and address an entry points to lives in
            // the engine until the entry's completion arrives.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("the submission queue stays full"))
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.listener.as_raw_fd());
        let entry = opcode::AcceptMulti::new(fd)
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.push(entry)
    }

    /// The loop: submit, wait for at least one completion, handle them
    /// all. Ends when the accept limit is reached and every connection is
    /// gone.
    fn run(&mut self) -> io::Result<()> {
        loop {
            if self.accepted >= self.max_accepts && self.free.len() == MAX_CONNECTIONS {
                return Ok(());
            }
            let quick = std::mem::take(&mut self.quick);
            let waited = if quick > 0 && self.batch_wait_us > 0 {
                let args = types::SubmitArgs::new().min_wait_usec(self.batch_wait_us);
                self.ring.submitter().submit_with_args(quick + 1, &args)
            } else {
                self.ring.submit_and_wait(1)
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ETIME)) => {}
                Err(e) => return Err(e),
            }
            let mut batch = std::mem::take(&mut self.batch);
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, result, flags) in &batch {
                self.complete(data, result, flags)?;
            }
            batch.clear();
            self.batch = batch;
            self.buffers.publish();
            self.rearm_starved()?;
        }
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) -> io::Result<()> {
        if data == ACCEPT {
            return self.accepted(result, flags);
        }
        let slot = (data >> 8) as usize;
        let op = Op::from_code(data & 0xFF).expect("user_data carries an op");
        let more = cqueue::more(flags);
        let buffer = cqueue::buffer_select(flags);
        let conn = self.conns[slot].as_mut().expect("an op's connection lives");
        if !more {
            conn.inflight -= 1;
        }
        if conn.dead {
            if let Some(bid) = buffer {
                self.buffers.give_back(bid);
            }
            if let Op::Send(d) = op {
                if let Some((bid, _, _)) = conn.flows[d].sending.take() {
                    self.buffers.give_back(bid);
                }
            }
            return self.maybe_free(slot);
        }
        let outcome = match op {
            Op::ReadRequest | Op::ReadAnswer => self.head_received(slot, op, result),
            Op::Connect => self.connected(slot, result),
            Op::SendRequest | Op::SendAnswer => self.head_sent(slot, op, result),
            Op::Recv(d) => self.received(slot, d, result, more, buffer),
            Op::Send(d) => self.sent(slot, d, result),
            Op::Shut(d) => {
                conn.shut[d] = true;
                Ok(())
            }
        };
        if outcome.is_err() {
            self.kill(slot);
        }
        self.maybe_free(slot)
    }

    fn accepted(&mut self, result: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) && self.accepted < self.max_accepts {
            self.arm_accept()?;
        }
        if result < 0 {
            return Ok(());
        }
        let fd = result;
        self.accepted += 1;
        if self.accepted >= self.max_accepts {
            // Stop accepting: closing the listener ends the multishot.
            // SAFETY: the listener's descriptor stays open (the engine owns
            // it); shutdown only stops its accept queue.
            unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
        let Some(slot) = self.free.pop() else {
            // SAFETY: `fd` came from accept and nothing else uses it.
            unsafe { libc::close(fd) };
            return Ok(());
        };
        nodelay(fd);
        self.conns[slot] = Some(Conn {
            client: fd,
            backend: -1,
            head: Vec::with_capacity(MAX_HEAD),
            head_sent: 0,
            head_end: 0,
            flows: states().map(|state| Flow {
                state,
                queue: VecDeque::with_capacity(16),
                sending: None,
                ended: false,
                starved: false,
            }),
            shut: [false; 2],
            inflight: 0,
            dead: false,
        });
        self.recv_head(slot, Op::ReadRequest)
    }

    /// Receives more of the head (request or answer) into the head buffer.
    fn recv_head(&mut self, slot: usize, op: Op) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        let fd = if op == Op::ReadRequest {
            conn.client
        } else {
            conn.backend
        };
        let len = conn.head.len();
        // The kernel writes into the spare capacity: the buffer (a heap
        // allocation of MAX_HEAD) is neither moved nor grown until this
        // receive completes.
        let spare = conn.head.spare_capacity_mut();
        let entry = opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr().cast(), spare.len() as u32)
            .build()
            .user_data(user_data(slot, op));
        debug_assert!(len < MAX_HEAD);
        conn.inflight += 1;
        self.push(entry)
    }

    /// Sends the rest of the head buffer (the request, or the answer).
    fn send_head(&mut self, slot: usize, op: Op) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        let fd = if op == Op::SendRequest {
            conn.backend
        } else {
            conn.client
        };
        let rest = &conn.head[conn.head_sent..];
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data(user_data(slot, op));
        conn.inflight += 1;
        self.push(entry)
    }

    fn head_received(&mut self, slot: usize, op: Op, result: i32) -> io::Result<()> {
        if result <= 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let conn = self.conns[slot].as_mut().expect("live");
        // SAFETY: the kernel wrote `result` bytes past the old length.
        unsafe { conn.head.set_len(conn.head.len() + result as usize) };
        let Some(end) = head_end(&conn.head) else {
            if conn.head.len() >= MAX_HEAD {
                return Err(io::ErrorKind::InvalidData.into());
            }
            return self.recv_head(slot, op);
        };
        conn.head_end = end;
        conn.head_sent = 0;
        if op == Op::ReadAnswer {
            return self.send_head(slot, Op::SendAnswer);
        }
        // SAFETY: plain socket creation; the descriptor is the connection's.
        let fd = unsafe {
            libc::socket(
                self.backend.family,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        nodelay(fd);
        conn.backend = fd;
        let addr = &self.backend.storage as *const _ as *const libc::sockaddr;
        let entry = opcode::Connect::new(types::Fd(fd), addr, self.backend.len)
            .build()
            .user_data(user_data(slot, Op::Connect));
        conn.inflight += 1;
        self.push(entry)
    }

    fn connected(&mut self, slot: usize, result: i32) -> io::Result<()> {
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        self.send_head(slot, Op::SendRequest)
    }

    fn head_sent(&mut self, slot: usize, op: Op, result: i32) -> io::Result<()> {
        if result <= 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let conn = self.conns[slot].as_mut().expect("live");
        conn.head_sent += result as usize;
        if conn.head_sent < conn.head.len() {
            return self.send_head(slot, op);
        }
        // Bytes after the head are the first frames of its direction.
        let d = if op == Op::SendRequest { 0 } else { 1 };
        let (head, flows) = (&conn.head, &mut conn.flows);
        examine(&mut flows[d].state, &head[conn.head_end..]).map_err(io::Error::other)?;
        if op == Op::SendRequest {
            conn.head.clear();
            return self.recv_head(slot, Op::ReadAnswer);
        }
        if !switches(&conn.head[..conn.head_end]) {
            return Err(io::Error::other("the backend refused the upgrade"));
        }
        conn.head = Vec::new();
        self.arm_recv(slot, 0)?;
        self.arm_recv(slot, 1)
    }

    /// Arms the multishot receive of direction `d`'s source.
    fn arm_recv(&mut self, slot: usize, d: usize) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        conn.flows[d].starved = false;
        let entry = opcode::RecvMulti::new(types::Fd(conn.source(d)), GROUP)
            .build()
            .user_data(user_data(slot, Op::Recv(d)));
        conn.inflight += 1;
        self.push(entry)
    }

    fn received(
        &mut self,
        slot: usize,
        d: usize,
        result: i32,
        more: bool,
        buffer: Option<u16>,
    ) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        if result == -libc::ENOBUFS {
            // Every buffer is in flight: arm again once some come back.
            conn.flows[d].starved = true;
            self.starved.push((slot, d));
            return Ok(());
        }
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        if result == 0 {
            conn.flows[d].ended = true;
            return self.flush(slot, d);
        }
        let bid = buffer.expect("a multishot receive selects a buffer");
        let flow = &mut conn.flows[d];
        flow.queue.push_back((bid, result as u32));
        if let Err(v) = examine(&mut flow.state, self.buffers.bytes(bid, result as usize)) {
            return Err(io::Error::other(v));
        }
        if !more {
            // The kernel ended the multishot (its completion queue was
            // full, for one): receive on.
            self.arm_recv(slot, d)?;
        }
        self.flush(slot, d)
    }

    /// Starts the next send of direction `d` unless one is in progress,
    /// or shuts the destination once the source ended and all is sent.
    fn flush(&mut self, slot: usize, d: usize) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        let flow = &mut conn.flows[d];
        if flow.sending.is_some() {
            return Ok(());
        }
        if let Some((bid, len)) = flow.queue.pop_front() {
            flow.sending = Some((bid, 0, len));
            return self.send(slot, d);
        }
        if !flow.ended || conn.shut[d] {
            return Ok(());
        }
        let entry = opcode::Shutdown::new(types::Fd(conn.destination(d)), libc::SHUT_WR)
            .build()
            .user_data(user_data(slot, Op::Shut(d)));
        conn.inflight += 1;
        self.quick += 1;
        self.push(entry)
    }

    /// Submits the send of what is left of direction `d`'s current buffer.
    fn send(&mut self, slot: usize, d: usize) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        let (bid, at, len) = conn.flows[d].sending.expect("a buffer to send");
        let bytes = &self.buffers.bytes(bid, len as usize)[at as usize..];
        let entry = opcode::Send::new(
            types::Fd(conn.destination(d)),
            bytes.as_ptr(),
            bytes.len() as u32,
        )
        .build()
        .user_data(user_data(slot, Op::Send(d)));
        conn.inflight += 1;
        self.quick += 1;
        self.push(entry)
    }

    fn sent(&mut self, slot: usize, d: usize, result: i32) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("live");
        let flow = &mut conn.flows[d];
        let (bid, at, len) = flow.sending.take().expect("a send in progress");
        if result <= 0 {
            self.buffers.give_back(bid);
            return Err(io::ErrorKind::WriteZero.into());
        }
        let at = at + result as u32;
        if at < len {
            flow.sending = Some((bid, at, len));
            return self.send(slot, d);
        }
        self.buffers.give_back(bid);
        self.flush(slot, d)
    }

    /// Ends a connection on an error: its sockets are shut both ways, so
    /// that what is outstanding completes, and buffers waiting to be sent
    /// go back to the ring.
    fn kill(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("live");
        if conn.dead {
            return;
        }
        conn.dead = true;
        for fd in [conn.client, conn.backend] {
            if fd >= 0 {
                // SAFETY: the connection owns its descriptors.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
        for flow in &mut conn.flows {
            for (bid, _) in flow.queue.drain(..) {
                self.buffers.give_back(bid);
            }
        }
    }

    /// Frees a connection that is over (dead, or both destinations shut)
    /// once none of its operations is outstanding.
    fn maybe_free(&mut self, slot: usize) -> io::Result<()> {
        let conn = self.conns[slot].as_ref().expect("live");
        let over = conn.dead || (conn.shut[0] && conn.shut[1]);
        if !over {
            return Ok(());
        }
        if conn.inflight > 0 {
            if !conn.dead {
                // Both ways are shut but a receive is still armed (the
                // peer has not closed): stop it by shutting the reads.
                self.kill(slot);
            }
            return Ok(());
        }
        let conn = self.conns[slot].take().expect("live");
        for flow in &conn.flows {
            if let Some((bid, _, _)) = flow.sending {
                self.buffers.give_back(bid);
            }
        }
        for fd in [conn.client, conn.backend] {
            if fd >= 0 {
                // SAFETY: nothing refers to the descriptor any more.
                unsafe { libc::close(fd) };
            }
        }
        self.free.push(slot);
        Ok(())
    }

    /// Arms again the receives that stopped for want of buffers.
    fn rearm_starved(&mut self) -> io::Result<()> {
        // Bounded by the list's length, which only shrinks here.
        while let Some((slot, d)) = self.starved.pop() {
            let live = self.conns[slot]
                .as_ref()
                .is_some_and(|c| !c.dead && c.flows[d].starved);
            if live {
                self.arm_recv(slot, d)?;
            }
        }
        Ok(())
    }
}

/// Sets TCP_NODELAY, as wsgate does on both sides.
fn nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid option pointer and length for TCP_NODELAY.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
