//! The variables an expression sees, built for each request from what it
//! reads. Strings borrow from the request where they can.

use std::collections::HashMap;

use cel::common::types::{CelBool, CelInt, CelList, CelMap, CelMapKey, CelString};
use cel::common::value::Val;
use chrono::{Datelike, Timelike};

use super::super::conditions::is_anonymous;
use super::super::{Request, Subject};
use super::check::Reads;
use crate::config::{Anonymity, PolicyConfig};
use crate::methods::MethodSet;

type Boxed<'v> = Box<dyn Val + 'v>;

/// `request`, with the fields the expression reads.
pub(super) fn request<'v>(request: &Request<'v>, settings: &PolicyConfig, reads: Reads) -> Boxed<'v> {
    let mut fields: Vec<(&'static str, Boxed<'v>)> = Vec::with_capacity(7);
    if reads.method {
        fields.push(("method", text(request.method.as_str())));
    }
    if reads.path {
        fields.push(("path", text(request.path)));
    }
    if reads.query {
        fields.push(("query", query(request.query)));
    }
    if reads.headers {
        fields.push(("headers", headers(request.headers)));
    }
    if reads.ip {
        fields.push(("ip", Box::new(CelString::from(request.ip.to_string()))));
    }
    if reads.geo {
        fields.push(("geo", geo(request)));
    }
    if reads.time {
        fields.push(("time", time(request.now, settings)));
    }
    record(fields)
}

/// `user`.
pub(super) fn user<'v>(subject: &Subject<'v>, now: i64) -> Boxed<'v> {
    let groups: Vec<Boxed<'v>> = subject.groups.iter().map(|group| text(group)).collect();
    let age = subject.second_factors.latest(MethodSet::ANY).map_or(-1, |at| (now - at).max(0));
    record([("name", text(subject.username)), ("groups", Box::new(CelList::from(groups))), ("second_factor_age", int(age))])
}

fn text(s: &str) -> Boxed<'_> {
    Box::new(CelString::from(s))
}

fn int<'v>(value: i64) -> Boxed<'v> {
    Box::new(CelInt::from(value))
}

fn record<'v>(fields: impl IntoIterator<Item = (&'static str, Boxed<'v>)>) -> Boxed<'v> {
    let entries: HashMap<CelMapKey<'v>, Boxed<'v>> = fields.into_iter().map(|(name, value)| (CelMapKey::from(name), value)).collect();
    Box::new(CelMap::from(entries))
}

/// Parameters by decoded name; the first of repeated ones (which the edge
/// refuses when an expression reads the query).
fn query(query: Option<&str>) -> Boxed<'_> {
    let mut entries: HashMap<CelMapKey<'_>, Boxed<'_>> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let key = CelMapKey::String(CelString::from(name));
        entries.entry(key).or_insert_with(|| Box::new(CelString::from(value)));
    }
    Box::new(CelMap::from(entries))
}

/// Headers by name; repeated lines joined with commas, as HTTP reads them.
fn headers(headers: &http::HeaderMap) -> Boxed<'_> {
    let entries: HashMap<CelMapKey<'_>, Boxed<'_>> = headers
        .keys()
        .map(|name| {
            let value = crate::edge::joined_header(headers, name).unwrap_or_default();
            (CelMapKey::from(name.as_str()), Box::new(CelString::from(value)) as Boxed<'_>)
        })
        .collect();
    Box::new(CelMap::from(entries))
}

fn geo<'v>(request: &Request<'v>) -> Boxed<'v> {
    let geo = request.geo;
    let known = |value: &'v Option<String>| text(value.as_deref().unwrap_or(""));
    record([
        ("country", known(&geo.country)),
        ("continent", known(&geo.continent)),
        ("city", known(&geo.city)),
        ("asn", int(geo.asn.map_or(0, i64::from))),
        ("isp", known(&geo.isp)),
        ("organization", known(&geo.organization)),
        ("connection_type", known(&geo.connection_type)),
        ("user_type", known(&geo.user_type)),
        ("domain", known(&geo.domain)),
        ("anonymous", Box::new(CelBool::from(is_anonymous(geo, Anonymity::Any)))),
    ])
}

fn time<'v>(now: i64, settings: &PolicyConfig) -> Boxed<'v> {
    let local = chrono::DateTime::from_timestamp(now, 0).map(|t| t.with_timezone(&settings.time_zone.0));
    let (hour, minute, weekday) =
        local.map_or((-1, -1, -1), |t| (i64::from(t.hour()), i64::from(t.minute()), i64::from(t.weekday().num_days_from_sunday())));
    record([("hour", int(hour)), ("minute", int(minute)), ("weekday", int(weekday))])
}
