//! Header edits in nginx's own structures, keeping nginx's invariants as
//! lua-nginx-module does (`ngx_http_lua_headers_in.c`): after request
//! headers change, every pointer nginx keeps into the header list
//! (`r->headers_in.host`, `user_agent`, `authorization`, `cookies`,
//! `x_forwarded_for`, ...) is recomputed from the list, so that no variable
//! or module reads a removed header or another header's value; response
//! headers nginx holds in a field of its own (Content-Type; Server, Date
//! and Last-Modified, which it writes itself unless a field points at the
//! list's) are set through it, so nginx never sends two of them.
use std::ptr::{addr_of_mut, null_mut};

use graft_contract::HeaderAction;
#[cfg(not(nginx1_23_0))]
use ngx::ffi::{ngx_array_push, ngx_array_t, ngx_palloc};
use ngx::ffi::{
    ngx_hash_strlow, ngx_http_headers_in_t, ngx_http_request_t, ngx_list_part_t, ngx_list_push,
    ngx_list_t, ngx_parse_http_time, ngx_pnalloc, ngx_pool_t, ngx_str_t, ngx_table_elt_t,
};

/// Copies bytes into the request's pool.
pub fn pool_str(pool: *mut ngx_pool_t, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: ngx_pnalloc returns `len` writable bytes from a live pool
    // (or null); the copy stays in bounds.
    unsafe {
        let p = ngx_pnalloc(pool, bytes.len().max(1)) as *mut u8;
        if p.is_null() {
            return None;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        Some(ngx_str_t {
            len: bytes.len(),
            data: p,
        })
    }
}

/// Appends a header to one of a request's header lists, in place. `pool`
/// is the request's own pool (the key, the value and the lower-case key
/// live there, as long as the request and its lists).
pub fn push_header(
    pool: *mut ngx_pool_t,
    list: &mut ngx_list_t,
    name: &str,
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    let key = pool_str(pool, name.as_bytes())?;
    let value = pool_str(pool, value)?;
    // SAFETY: `pool` is the request's pool (this function's contract), so
    // ngx_pnalloc returns at least `key.len` writable bytes (or null), which
    // ngx_hash_strlow fills with the lower-case copy of the key's `key.len`
    // bytes. ngx_list_push returns an uninitialised element of the list's
    // element type (ngx_table_elt_t for header lists), or null: it is
    // written whole before a reference to it is made.
    unsafe {
        let lower = ngx_pnalloc(pool, key.len.max(1)) as *mut u8;
        if lower.is_null() {
            return None;
        }
        // nginx's hash of the lower-case name, as its parser sets it: a
        // proxy finds the headers it overrides by it.
        let hash = ngx_hash_strlow(lower, key.data, key.len).max(1);
        let elt_at = ngx_list_push(list) as *mut ngx_table_elt_t;
        if elt_at.is_null() {
            return None;
        }
        let mut elt: ngx_table_elt_t = std::mem::zeroed();
        elt.hash = hash;
        elt.key = key;
        elt.value = value;
        elt.lowcase_key = lower;
        elt_at.write(elt);
        Some(elt_at)
    }
}

fn key_of(h: &ngx_table_elt_t) -> &[u8] {
    if h.key.len == 0 {
        return &[];
    }
    // SAFETY: a header's key points at `len` bytes of the request's memory.
    unsafe { std::slice::from_raw_parts(h.key.data, h.key.len) }
}

/// Removes every request header of that name from the list, moving the
/// later elements of its part down, as the Lua module's header removal does.
pub fn remove_request_header(list: &mut ngx_list_t, name: &str) {
    let mut part: *mut ngx_list_part_t = &mut list.part;
    // SAFETY: an ngx_list_t of ngx_table_elt_t: each part holds `nelts`
    // elements and links to the next; elements move only within a part.
    unsafe {
        while let Some(p) = part.as_mut() {
            let elts = p.elts as *mut ngx_table_elt_t;
            let mut i = 0;
            while i < p.nelts {
                if key_of(&*elts.add(i)).eq_ignore_ascii_case(name.as_bytes()) {
                    std::ptr::copy(elts.add(i + 1), elts.add(i), p.nelts - i - 1);
                    p.nelts -= 1;
                } else {
                    i += 1;
                }
            }
            part = p.next;
        }
    }
}

/// Hides every response header of that name (nginx skips hash 0).
fn hide_response_header(list: &mut ngx_list_t, name: &str) {
    let mut part: *mut ngx_list_part_t = &mut list.part;
    // SAFETY: as in remove_request_header.
    unsafe {
        while let Some(p) = part.as_mut() {
            let elts = p.elts as *mut ngx_table_elt_t;
            for i in 0..p.nelts {
                let h = &mut *elts.add(i);
                if key_of(h).eq_ignore_ascii_case(name.as_bytes()) {
                    h.hash = 0;
                }
            }
            part = p.next;
        }
    }
}

/// The response's status as the client will get it: nginx's own error
/// answers (`return 403`, an upstream's 502, an `error_page`'s) keep it in
/// `err_status`, as `$status` and lua-nginx-module's `ngx.status` read it.
pub fn response_status(r: &ngx_http_request_t) -> u16 {
    let status = if r.err_status != 0 {
        r.err_status
    } else {
        r.headers_out.status
    };
    u16::try_from(status).unwrap_or(0)
}

/// The first response header of that name the response has now (a hidden
/// one, hash 0, is not there); Content-Type from the field nginx keeps it
/// in.
pub fn response_header_value<'r>(r: &'r ngx_http_request_t, name: &[u8]) -> Option<&'r [u8]> {
    if name.eq_ignore_ascii_case(b"content-type") {
        let t = &r.headers_out.content_type;
        // SAFETY: a set content type points at `len` bytes of the
        // request's memory.
        return (t.len != 0 && !t.data.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(t.data, t.len) });
    }
    let mut part: *const ngx_list_part_t = &r.headers_out.headers.part;
    // SAFETY: an ngx_list_t of ngx_table_elt_t: each part holds `nelts`
    // elements and links to the next.
    unsafe {
        while let Some(p) = part.as_ref() {
            let elts = p.elts as *const ngx_table_elt_t;
            for i in 0..p.nelts {
                let h = &*elts.add(i);
                if h.hash != 0 && key_of(h).eq_ignore_ascii_case(name) {
                    return Some(value_of(h));
                }
            }
            part = p.next;
        }
    }
    None
}

/// Sets, adds or removes a response header; Content-Type goes through
/// the field nginx keeps it in.
pub fn response_header(
    r: &mut ngx_http_request_t,
    action: HeaderAction,
    name: &str,
    value: &[u8],
) -> Option<()> {
    let pool = r.pool;
    if name.eq_ignore_ascii_case("content-type") {
        let out = &mut r.headers_out;
        out.content_type = match action {
            HeaderAction::Remove => ngx_str_t {
                len: 0,
                data: null_mut(),
            },
            HeaderAction::Set | HeaderAction::Add => pool_str(pool, value)?,
        };
        out.content_type_len = out.content_type.len;
        out.content_type_lowcase = null_mut();
        out.content_type_hash = 0;
        return Some(());
    }
    let list = &mut r.headers_out.headers;
    if action != HeaderAction::Add {
        hide_response_header(list, name);
    }
    // Headers nginx writes itself unless a field points at one of the
    // list's: the field follows the list, or nginx would send two.
    let out = &mut r.headers_out;
    let field: Option<*mut *mut ngx_table_elt_t> = if name.eq_ignore_ascii_case("server") {
        Some(addr_of_mut!(out.server))
    } else if name.eq_ignore_ascii_case("date") {
        Some(addr_of_mut!(out.date))
    } else if name.eq_ignore_ascii_case("last-modified") {
        // The time nginx compares If-Modified-Since with follows too.
        // SAFETY: ngx_parse_http_time reads `len` bytes of `value`.
        out.last_modified_time = match action {
            HeaderAction::Remove => -1,
            _ => unsafe { ngx_parse_http_time(value.as_ptr() as *mut u8, value.len()) },
        };
        Some(addr_of_mut!(out.last_modified))
    } else {
        None
    };
    if action == HeaderAction::Remove {
        if let Some(f) = field {
            // SAFETY: a field of the live request's headers_out.
            unsafe { *f = null_mut() };
        }
        return Some(());
    }
    // Location stays in the list, as the Lua bridge leaves it: nginx then
    // sends it as the module wrote it (not made absolute), alike on both
    // paths.
    let h = push_header(pool, &mut r.headers_out.headers, name, value)?;
    if let Some(f) = field {
        // SAFETY: a field of the live request's headers_out; `h` is an
        // element of its header list, in the request's pool.
        unsafe { *f = h };
    }
    Some(())
}

/// Where nginx keeps every request header of a name, in order (Cookie,
/// X-Forwarded-For): a list linked through each header's `next` since
/// nginx 1.23.0, an array of pointers before.
#[cfg(nginx1_23_0)]
type Every = *mut *mut ngx_table_elt_t;
#[cfg(not(nginx1_23_0))]
type Every = *mut ngx_array_t;

/// The fields of `r->headers_in` that point into the request-header list,
/// by name, taken together from one borrow of it.
struct ListFields {
    /// Those that point at the first header of their name.
    first: [(&'static str, *mut *mut ngx_table_elt_t); 28],
    /// Those that keep every header of their name (Cookie,
    /// X-Forwarded-For).
    every: [(&'static str, Every); 2],
}

/// The fields of `r->headers_in` that point into the request-header list.
fn list_fields(hi: &mut ngx_http_headers_in_t) -> ListFields {
    #[cfg(nginx1_23_0)]
    let cookie = addr_of_mut!(hi.cookie);
    #[cfg(not(nginx1_23_0))]
    let cookie = addr_of_mut!(hi.cookies);
    ListFields {
        first: [
            ("host", addr_of_mut!(hi.host)),
            ("connection", addr_of_mut!(hi.connection)),
            ("if-modified-since", addr_of_mut!(hi.if_modified_since)),
            ("if-unmodified-since", addr_of_mut!(hi.if_unmodified_since)),
            ("if-match", addr_of_mut!(hi.if_match)),
            ("if-none-match", addr_of_mut!(hi.if_none_match)),
            ("user-agent", addr_of_mut!(hi.user_agent)),
            ("referer", addr_of_mut!(hi.referer)),
            ("content-length", addr_of_mut!(hi.content_length)),
            ("content-range", addr_of_mut!(hi.content_range)),
            ("content-type", addr_of_mut!(hi.content_type)),
            ("range", addr_of_mut!(hi.range)),
            ("if-range", addr_of_mut!(hi.if_range)),
            ("transfer-encoding", addr_of_mut!(hi.transfer_encoding)),
            ("te", addr_of_mut!(hi.te)),
            ("expect", addr_of_mut!(hi.expect)),
            ("upgrade", addr_of_mut!(hi.upgrade)),
            ("accept-encoding", addr_of_mut!(hi.accept_encoding)),
            ("via", addr_of_mut!(hi.via)),
            ("authorization", addr_of_mut!(hi.authorization)),
            ("keep-alive", addr_of_mut!(hi.keep_alive)),
            ("x-real-ip", addr_of_mut!(hi.x_real_ip)),
            ("accept", addr_of_mut!(hi.accept)),
            ("accept-language", addr_of_mut!(hi.accept_language)),
            ("depth", addr_of_mut!(hi.depth)),
            ("destination", addr_of_mut!(hi.destination)),
            ("overwrite", addr_of_mut!(hi.overwrite)),
            ("date", addr_of_mut!(hi.date)),
        ],
        every: [
            ("cookie", cookie),
            ("x-forwarded-for", addr_of_mut!(hi.x_forwarded_for)),
        ],
    }
}

/// Recomputes every pointer nginx keeps into the request-header list from
/// the list itself, as nginx's header parsing sets them (the first header
/// of a name for single ones; every one, in order, for Cookie and
/// X-Forwarded-For). A Host header a module changed (`host_changed`)
/// also changes `$host`, as lua-nginx-module's does; otherwise nginx's
/// own choice stands (the request line's host first).
pub fn refresh_headers_in(r: &mut ngx_http_request_t, host_changed: bool) -> Option<()> {
    let pool = r.pool;
    let hi = &mut r.headers_in;
    let fields = list_fields(hi);
    // SAFETY: `fields` are fields of r->headers_in and `pool` is the
    // request's pool, as clear_fields and point_at ask; the list's parts
    // hold `nelts` elements each, in the request pool. No reference to
    // all of `hi` is taken while `fields` are in use: it is reached field
    // by field (`user`, `passwd`, `headers`; `host` and `server` once the
    // walk is done).
    unsafe {
        clear_fields(pool, &fields)?;
        // The user and password come from Authorization: parsed again on use.
        hi.user = ngx_str_t {
            len: 0,
            data: null_mut(),
        };
        hi.passwd = ngx_str_t {
            len: 0,
            data: null_mut(),
        };
        let mut part: *mut ngx_list_part_t = &mut hi.headers.part;
        while let Some(p) = part.as_mut() {
            let elts = p.elts as *mut ngx_table_elt_t;
            for i in 0..p.nelts {
                point_at(&fields, elts.add(i))?;
            }
            part = p.next;
        }
        if host_changed {
            hi.server = match hi.host.as_ref() {
                Some(host) => pool_str(pool, &host_name(value_of(host)))?,
                None => ngx_str_t {
                    len: 0,
                    data: null_mut(),
                },
            };
        }
    }
    Some(())
}

/// Empties every field that points into the request-header list, before
/// the list is walked again.
///
/// # Safety
/// `fields` are fields of a live request's headers_in and `pool` its pool.
unsafe fn clear_fields(pool: *mut ngx_pool_t, fields: &ListFields) -> Option<()> {
    #[cfg(nginx1_23_0)]
    let _ = pool;
    // SAFETY: the caller's contract: each pointer is a field of the live
    // headers_in, not borrowed elsewhere during this call.
    unsafe {
        for (_, field) in &fields.first {
            **field = null_mut();
        }
        for (_, every) in &fields.every {
            // Arrays before nginx 1.23.0 (made here when nginx has not),
            // lists since.
            #[cfg(not(nginx1_23_0))]
            reset_array(pool, &mut **every)?;
            #[cfg(nginx1_23_0)]
            {
                **every = null_mut();
            }
        }
    }
    Some(())
}

/// Points the field nginx keeps for header `h`'s name at it: appended to
/// Cookie's or X-Forwarded-For's, or set in a single field still empty
/// (the first header of a name wins); any other header is left alone.
///
/// # Safety
/// `fields` are fields of a live request's headers_in, emptied by
/// `clear_fields` for this walk of its list, and `h` an element of that
/// list.
unsafe fn point_at(fields: &ListFields, h: *mut ngx_table_elt_t) -> Option<()> {
    // SAFETY: the caller's contract: `h` is a live element of the list,
    // and each field pointer a field of the same live headers_in, not
    // borrowed elsewhere during this call.
    unsafe {
        let key = key_of(&*h);
        // Since 1.23.0 every header links to the next of its name:
        // unlinked here (elements a removal moved hold stale links),
        // linked again below for Cookie and X-Forwarded-For; a single
        // field points at the first alone, as lua-nginx-module leaves it.
        #[cfg(nginx1_23_0)]
        {
            (*h).next = null_mut();
        }
        if let Some((_, every)) = fields
            .every
            .iter()
            .find(|(n, _)| key.eq_ignore_ascii_case(n.as_bytes()))
        {
            #[cfg(nginx1_23_0)]
            {
                let mut link = *every;
                while !(*link).is_null() {
                    link = addr_of_mut!((**link).next);
                }
                *link = h;
            }
            #[cfg(not(nginx1_23_0))]
            {
                let place = ngx_array_push(*every) as *mut *mut ngx_table_elt_t;
                *place.as_mut()? = h;
            }
            return Some(());
        }
        if let Some((_, field)) = fields
            .first
            .iter()
            .find(|(n, _)| key.eq_ignore_ascii_case(n.as_bytes()))
        {
            if (**field).is_null() {
                **field = h;
            }
        }
    }
    Some(())
}

/// Empties one of nginx's arrays of header pointers, making it first if
/// nginx has not.
///
/// # Safety
/// `a` is a field of a live request's headers_in and `pool` its pool.
#[cfg(not(nginx1_23_0))]
unsafe fn reset_array(pool: *mut ngx_pool_t, a: &mut ngx_array_t) -> Option<()> {
    if a.elts.is_null() {
        const N: usize = 2;
        let size = std::mem::size_of::<*mut ngx_table_elt_t>();
        // SAFETY: memory from the request's pool for N pointers, the
        // layout ngx_array_init gives (it is an inline function in C).
        let elts = unsafe { ngx_palloc(pool, N * size) };
        if elts.is_null() {
            return None;
        }
        a.elts = elts;
        a.size = size;
        a.nalloc = N;
        a.pool = pool;
    }
    a.nelts = 0;
    Some(())
}

/// The name part of a Host value, as `$host` holds it: lower case, without
/// the port or a trailing dot; an IPv6 literal keeps its brackets.
fn host_name(value: &[u8]) -> Vec<u8> {
    let name = if value.first() == Some(&b'[') {
        match value.iter().position(|&b| b == b']') {
            Some(end) => &value[..=end],
            None => value,
        }
    } else {
        value.split(|&b| b == b':').next().unwrap_or(&[])
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.to_ascii_lowercase()
}

fn value_of(h: &ngx_table_elt_t) -> &[u8] {
    if h.value.len == 0 {
        return &[];
    }
    // SAFETY: a header's value points at `len` bytes of the request's memory.
    unsafe { std::slice::from_raw_parts(h.value.data, h.value.len) }
}

/// Sets the response's length as lua-nginx-module's `ngx.header` does: a
/// `Content-Length` element at the end of the header list, with nginx's
/// fields pointing at it (so nginx writes it there, once, and its chunked
/// filter leaves the body unframed). An answer sent natively then goes on
/// the wire as the Lua bridge sends the same answer.
pub fn set_content_length(r: &mut ngx_http_request_t, len: usize) -> Option<()> {
    let pool = r.pool;
    hide_response_header(&mut r.headers_out.headers, "content-length");
    let h = push_header(
        pool,
        &mut r.headers_out.headers,
        "Content-Length",
        len.to_string().as_bytes(),
    )?;
    r.headers_out.content_length = h;
    r.headers_out.content_length_n = i64::try_from(len).ok()?;
    Some(())
}
