//! Lanes: the requests whose order can change an answer (those counted in
//! one rate-limit or rollback window) sent in corpus order, one lane
//! each; every other request on a lane of its own.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::corpus::CorpusRequest;

/// The zone serving a request's host, as nginx and graft-edge find it:
/// the host in lower case, without port or trailing dot; else `*`.
pub fn zone_of(config: &Value, req: &CorpusRequest) -> Option<String> {
    let zones = config["zones"].as_object()?;
    let host = String::from_utf8_lossy(&req.host).to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host.as_str(),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if zones.contains_key(host) {
        Some(host.to_string())
    } else if zones.contains_key("*") {
        Some("*".to_string())
    } else {
        None
    }
}

/// The value of a request's header `name` (the first line of that name).
fn header<'a>(req: &'a CorpusRequest, name: &str) -> Option<&'a [u8]> {
    req.headers.iter().find_map(|h| {
        let colon = h.iter().position(|&b| b == b':')?;
        h[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| h[colon + 1..].trim_ascii())
    })
}

/// The windows a request of `zone` counts in, where the order of the
/// requests counted can change an answer: one text per window. A zone
/// with a rollback or a budget's rate (windows of the whole zone) gives
/// one window for every request; so does a rate limit keyed by a header
/// an earlier step of the zone may set (the key a request counts under is
/// then not the one it was sent with). A limit no window can reach (a
/// limit of at least `requests`, the zone's requests in the corpus) gives
/// none: every request it counts passes, in any order.
fn windows(zone_name: &str, zone: &Value, req: &CorpusRequest, requests: u64) -> Vec<String> {
    let steps = zone["modules"].as_array().cloned().unwrap_or_default();
    if steps
        .iter()
        .any(|s| !s["rollback"].is_null() || !s["budget"]["max_rate"].is_null())
    {
        return vec![format!("{zone_name}\0zone")];
    }
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step["module"] != "rate_limit" {
            continue;
        }
        let earlier = serde_json::to_string(&steps[..i])
            .unwrap_or_default()
            .to_ascii_lowercase();
        for limit in step["config"]["limits"].as_array().into_iter().flatten() {
            if limit["limit"].as_u64().is_some_and(|l| l >= requests) {
                continue;
            }
            let name = limit["name"].as_str().unwrap_or_default();
            let key = limit["key"].as_str().unwrap_or_default();
            let value = match key.split_once(':') {
                _ if key == "client" => req
                    .client
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
                    .to_string(),
                Some(("header", h)) if earlier.contains(&h.to_ascii_lowercase()) => {
                    "(set by a step)".to_string()
                }
                Some(("header", h)) => match header(req, h) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None => continue,
                },
                _ => "(unknown key)".to_string(),
            };
            out.push(format!("{zone_name}\0{i}\0{name}\0{value}"));
        }
    }
    out
}

/// The lanes: requests sharing a window (directly, or through others)
/// on one lane, in corpus order; the longest lanes first.
pub fn lanes(config: &Value, requests: &[CorpusRequest]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..requests.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let zones: Vec<Option<String>> = requests.iter().map(|r| zone_of(config, r)).collect();
    let mut in_zone: BTreeMap<&str, u64> = BTreeMap::new();
    for z in zones.iter().flatten() {
        *in_zone.entry(z).or_default() += 1;
    }
    let mut first_in: BTreeMap<String, usize> = BTreeMap::new();
    for (i, req) in requests.iter().enumerate() {
        let Some(zone) = &zones[i] else {
            continue;
        };
        for w in windows(zone, &config["zones"][zone], req, in_zone[zone.as_str()]) {
            let j = *first_in.entry(w).or_insert(i);
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..requests.len() {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    let mut lanes: Vec<Vec<usize>> = by_root.into_values().collect();
    lanes.sort_by_key(|l| std::cmp::Reverse(l.len()));
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(host: &str, client: u8, key: Option<&str>) -> CorpusRequest {
        let mut r = CorpusRequest::get(host, "/").from(std::net::Ipv4Addr::new(127, 0, 0, client));
        if let Some(k) = key {
            r = r.header(&format!("X-Api-Key: {k}"));
        }
        r
    }

    #[test]
    fn requests_sharing_a_window_share_a_lane_in_corpus_order() {
        let config = json!({ "zones": {
            "api.test": { "modules": [ { "module": "rate_limit", "config": { "limits": [
                { "name": "keys", "key": "header:X-Api-Key", "limit": 2, "window": 60 },
                { "name": "huge", "key": "client", "limit": 1000, "window": 60 } ] } } ] },
            "www.test": { "modules": [ { "module": "waf", "config": { "rules": [] } } ] } } });
        let requests = vec![
            get("api.test", 1, Some("a")),
            get("API.test:8080", 2, Some("a")),
            get("api.test", 1, Some("b")),
            get("api.test", 1, None),
            get("www.test", 1, None),
            get("api.test", 3, Some("b")),
        ];
        // Key a: 0 and 1; key b: 2 and 5. The client limit (1000, never
        // reached by 5 requests) joins nothing.
        let mut lanes = lanes(&config, &requests);
        lanes.sort();
        assert_eq!(lanes, vec![vec![0, 1], vec![2, 5], vec![3], vec![4]]);
    }

    #[test]
    fn a_key_a_step_may_set_or_a_rollback_puts_the_zone_on_one_lane() {
        let set = json!({ "zones": { "api.test": { "modules": [
            { "module": "headers", "config": { "rules": [ { "request": [ { "set": "X-Api-Key", "value": "k" } ] } ] } },
            { "module": "rate_limit", "config": { "limits": [
                { "name": "keys", "key": "header:X-Api-Key", "limit": 1, "window": 60 } ] } } ] } } });
        let requests = vec![get("api.test", 1, Some("a")), get("api.test", 2, Some("b"))];
        assert_eq!(lanes(&set, &requests), vec![vec![0, 1]]);
        let rollback = json!({ "zones": { "api.test": { "modules": [
            { "module": "waf", "config": { "rules": [] },
              "rollback": { "max_rate": 0.5, "window": 60, "min_requests": 10 } } ] } } });
        assert_eq!(lanes(&rollback, &requests), vec![vec![0, 1]]);
    }
}
