//! The request view modules read, over nginx's own `ngx_http_request_t`:
//! nothing is copied, every slice points into the request's memory.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::sync::Arc;

use graft_contract::{HeaderVisitor, RequestView};
use ngx::ffi::{
    ngx_buf_t, ngx_http_core_module, ngx_http_core_srv_conf_t, ngx_http_request_t, ngx_list_part_t,
    ngx_str_t, ngx_table_elt_t, sockaddr_in, sockaddr_in6, AF_INET, AF_INET6,
};

pub struct NgxRequest<'r> {
    r: &'r ngx_http_request_t,
    /// The body as far as the zone reads it (`steps::zone_body`).
    body: Option<Arc<[u8]>>,
}

impl<'r> NgxRequest<'r> {
    pub fn new(r: &'r ngx_http_request_t) -> Self {
        NgxRequest { r, body: None }
    }

    /// The view of a request whose zone reads bodies, with what it read.
    pub fn with_body(r: &'r ngx_http_request_t, body: Option<Arc<[u8]>>) -> Self {
        NgxRequest { r, body }
    }
}

/// Whether the request comes with a body (a length above 0, or chunked).
pub fn has_body(r: &ngx_http_request_t) -> bool {
    r.headers_in.content_length_n > 0 || r.headers_in.chunked() != 0
}

/// What nginx has of a request's body.
pub enum BodyRead {
    /// No body was read for this request (none asked, or still reading).
    NotRead,
    /// Its first `max` bytes (fewer if shorter), and its whole length.
    Read(Vec<u8>, u64),
    /// A part in a temporary file could not be read.
    Unreadable(std::io::Error),
}

/// Appends to `into` at most `max` bytes of one buffer's data, from
/// memory or from its file, and returns the buffer's whole length.
///
/// # Safety
/// `b` is a live buffer of the request: in memory, pos..last are readable;
/// in a file, `file` is nginx's open file for file_pos..file_last (it is
/// borrowed here, never closed, hence ManuallyDrop).
pub unsafe fn buf_bytes(b: &ngx_buf_t, max: usize, into: &mut Vec<u8>) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::FromRawFd;
    let in_memory = b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0;
    // SAFETY: the caller's contract.
    unsafe {
        if !in_memory && b.in_file() != 0 && !b.file.is_null() {
            let len = u64::try_from(b.file_last - b.file_pos).unwrap_or(0);
            let want = max.min(usize::try_from(len).unwrap_or(usize::MAX));
            if want > 0 && (*b.file).fd < 0 {
                // nginx closed the file (an upstream is done with a body).
                return Err(std::io::Error::other("its file is closed"));
            }
            if want > 0 {
                let file = std::mem::ManuallyDrop::new(std::fs::File::from_raw_fd((*b.file).fd));
                let mut part = vec![0u8; want];
                file.read_exact_at(&mut part, u64::try_from(b.file_pos).unwrap_or(0))?;
                into.extend_from_slice(&part);
            }
            Ok(len)
        } else if !b.pos.is_null() && b.last > b.pos {
            let len = usize::try_from(b.last.offset_from(b.pos)).unwrap_or(0);
            into.extend_from_slice(std::slice::from_raw_parts(b.pos, max.min(len)));
            Ok(len as u64)
        } else {
            Ok(0)
        }
    }
}

/// The first `max` bytes of the body nginx read for the request, from
/// memory or from the temporary file a longer body was written to, and
/// the body's whole length.
pub fn body_prefix(r: &ngx_http_request_t, max: usize) -> BodyRead {
    // SAFETY: request_body is null or nginx's record of the body it read;
    // once reading is done its chain holds live buffers of the request.
    unsafe {
        let Some(rb) = r.request_body.as_ref() else {
            return BodyRead::NotRead;
        };
        // Still reading (or a read that failed part-way): `rest` is what
        // nginx still waits for.
        if r.reading_body() != 0 || rb.rest != 0 {
            return BodyRead::NotRead;
        }
        let mut out = Vec::new();
        let mut total: u64 = 0;
        let mut cl = rb.bufs;
        while let Some(link) = cl.as_ref() {
            cl = link.next;
            let Some(b) = link.buf.as_ref() else {
                continue;
            };
            let room = max.saturating_sub(out.len());
            match buf_bytes(b, room, &mut out) {
                Ok(len) => total += len,
                Err(e) => return BodyRead::Unreadable(e),
            }
        }
        BodyRead::Read(out, total)
    }
}

pub(crate) fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: a non-empty ngx_str_t of a live request points at `len`
        // bytes that live at least as long as the request.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

impl RequestView for NgxRequest<'_> {
    fn method(&self) -> &[u8] {
        bytes(&self.r.method_name)
    }

    fn path(&self) -> &[u8] {
        bytes(&self.r.uri)
    }

    fn raw_uri(&self) -> &[u8] {
        bytes(&self.r.unparsed_uri)
    }

    fn query(&self) -> Option<&[u8]> {
        Some(bytes(&self.r.args)).filter(|q| !q.is_empty())
    }

    /// As nginx's `$host`: the validated, lower-cased Host, else the
    /// server's name.
    fn host(&self) -> &[u8] {
        let server = bytes(&self.r.headers_in.server);
        if !server.is_empty() {
            return server;
        }
        // SAFETY: srv_conf is the request's server's array of server confs,
        // indexed by ctx_index; the core module's entry always exists.
        unsafe {
            let cscf = *self.r.srv_conf.add(ngx_http_core_module.ctx_index)
                as *const ngx_http_core_srv_conf_t;
            cscf.as_ref().map_or(&[], |c| bytes(&c.server_name))
        }
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let mut found = None;
        self.for_each_table_elt(|h| {
            if bytes(&h.key).eq_ignore_ascii_case(name) {
                found = Some(bytes(&h.value));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        found
    }

    fn for_each_header(&self, f: &mut HeaderVisitor<'_>) {
        self.for_each_table_elt(|h| f(bytes(&h.key), bytes(&h.value)));
    }

    fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    fn client_addr(&self) -> Option<IpAddr> {
        // SAFETY: a live request's connection and its sockaddr are valid;
        // sa_family says which sockaddr structure it is.
        unsafe {
            let sa = self.r.connection.as_ref()?.sockaddr;
            match u32::from(sa.as_ref()?.sa_family) {
                AF_INET => {
                    let sin = &*(sa as *const sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                AF_INET6 => {
                    let sin6 = &*(sa as *const sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(
                        sin6.sin6_addr.__in6_u.__u6_addr8,
                    )))
                }
                _ => None,
            }
        }
    }
}

impl<'r> NgxRequest<'r> {
    /// Walks the request's header list, part by part, in the order received
    /// (generic, so that a caller's test of each header is inlined).
    pub(crate) fn for_each_table_elt(
        &self,
        mut f: impl FnMut(&'r ngx_table_elt_t) -> ControlFlow<()>,
    ) {
        let mut part: *const ngx_list_part_t = &self.r.headers_in.headers.part;
        // SAFETY: an ngx_list_t of a live request: each part holds `nelts`
        // ngx_table_elt_t and links to the next, the last one to null.
        unsafe {
            while let Some(p) = part.as_ref() {
                let elts = p.elts as *const ngx_table_elt_t;
                for i in 0..p.nelts {
                    let h = &*elts.add(i);
                    if h.hash == 0 {
                        continue; // removed header
                    }
                    if f(h).is_break() {
                        return;
                    }
                }
                part = p.next;
            }
        }
    }
}
