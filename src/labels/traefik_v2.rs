//! Traefik v2/v3 labels (`traefik.http.routers.<r>.*`, `traefik.http.services.<s>.*`),
//! applied onto the same [`ServiceLabels`] the v1 labels fill.
//!
//! limpet routes one Docker service as one load-balanced service, so several v2 routers
//! are supported but only one v2 service definition per Docker service.

use std::collections::BTreeMap;

use super::{invalid, parse_bool, LabelError, ServiceLabels};
use crate::config::parse_duration;
use crate::table::rule::{parse_v2, ParsedRule};

/// One `traefik.http.routers.<name>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLabels {
    pub name: String,
    pub rule: ParsedRule,
    pub priority: i32,
    /// `traefik.http.routers.<r>.tls=true`: only requests that came over TLS.
    pub tls: bool,
}

/// Applies every `traefik.http.*` label. Returns the labels it did not understand.
pub(super) fn apply(
    labels: &BTreeMap<String, String>,
    out: &mut ServiceLabels,
) -> Result<Vec<String>, LabelError> {
    let mut ignored = Vec::new();
    let mut rules: BTreeMap<String, (String, ParsedRule)> = BTreeMap::new();
    let mut priorities: BTreeMap<String, i32> = BTreeMap::new();
    let mut tls: BTreeMap<String, bool> = BTreeMap::new();
    let mut service: Option<String> = None;
    for (label, value) in labels {
        let Some(rest) = label
            .get(..13)
            .filter(|p| p.eq_ignore_ascii_case("traefik.http."))
            .map(|_| &label[13..])
        else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("routers.") {
            let Some((name, key)) = r.split_once('.') else {
                ignored.push(label.clone());
                continue;
            };
            match key {
                "rule" => {
                    let rule = parse_v2(value).map_err(|source| LabelError::Rule {
                        label: label.clone(),
                        source,
                    })?;
                    rules.insert(name.to_owned(), (label.clone(), rule));
                }
                "priority" => {
                    let p = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(label, value, "expected an integer"))?;
                    priorities.insert(name.to_owned(), p);
                }
                "tls" => {
                    tls.insert(name.to_owned(), parse_bool(label, value)?);
                }
                // Entrypoints: limpet has one HTTP entrypoint, every router listens on it.
                // Service: there is only one service to point at.
                "entrypoints" | "service" => {}
                _ => ignored.push(label.clone()),
            }
        } else if let Some(r) = lower.strip_prefix("services.") {
            let Some((name, key)) = r.split_once('.') else {
                ignored.push(label.clone());
                continue;
            };
            match &service {
                Some(existing) if existing != name => {
                    return Err(invalid(
                        label,
                        value,
                        &format!("limpet routes one service per Docker service; `{existing}` is already defined"),
                    ))
                }
                _ => service = Some(name.to_owned()),
            }
            apply_service_key(label, key, value, out, &mut ignored)?;
        } else {
            ignored.push(label.clone());
        }
    }
    for (name, p) in &priorities {
        if !rules.contains_key(name) {
            return Err(invalid(
                &format!("traefik.http.routers.{name}.priority"),
                &p.to_string(),
                "the router has no rule",
            ));
        }
    }
    if !rules.is_empty() {
        if let Some(v1) = &out.rule {
            let (label, _) = rules.values().next().expect("not empty");
            return Err(LabelError::Conflict {
                first: "traefik.frontend.rule".into(),
                first_value: v1.source.to_string(),
                second: label.clone(),
                second_value: labels[label].clone(),
            });
        }
    }
    out.routers = rules
        .into_iter()
        .map(|(name, (_, rule))| RouterLabels {
            priority: priorities.get(&name).copied().unwrap_or(0),
            tls: tls.get(&name).copied().unwrap_or(false),
            name,
            rule,
        })
        .collect();
    if out.backend.is_none() {
        out.backend = service;
    }
    Ok(ignored)
}

fn apply_service_key(
    label: &str,
    key: &str,
    value: &str,
    out: &mut ServiceLabels,
    ignored: &mut Vec<String>,
) -> Result<(), LabelError> {
    match key {
        "loadbalancer.server.port" => match value.trim().parse::<u16>() {
            Ok(p) if p > 0 => out.port = Some(p),
            _ => {
                return Err(invalid(
                    label,
                    value,
                    "expected a port number from 1 to 65535",
                ))
            }
        },
        "loadbalancer.server.scheme" => {
            out.options.protocol = value
                .parse()
                .map_err(|e: String| invalid(label, value, &e))?;
        }
        "loadbalancer.passhostheader" => out.options.pass_host_header = parse_bool(label, value)?,
        "loadbalancer.sticky" | "loadbalancer.sticky.cookie" => {
            out.sticky = parse_bool(label, value)?
        }
        "loadbalancer.sticky.cookie.name" => {
            if value.trim().is_empty() {
                return Err(invalid(label, value, "expected a cookie name"));
            }
            out.cookie.cookie_name = value.trim().to_owned();
            out.sticky = true;
        }
        "loadbalancer.sticky.cookie.secure" => {
            out.cookie.secure = parse_bool(label, value)?;
            out.sticky = true;
        }
        "loadbalancer.sticky.cookie.httponly" => {
            out.cookie.http_only = parse_bool(label, value)?;
            out.sticky = true;
        }
        "loadbalancer.sticky.cookie.samesite" => {
            out.cookie.same_site = Some(
                value
                    .parse()
                    .map_err(|e: String| invalid(label, value, &e))?,
            );
            out.sticky = true;
        }
        "loadbalancer.sticky.cookie.maxage" => {
            let d = parse_duration(value).map_err(|e| invalid(label, value, &e))?;
            out.cookie.max_age = (!d.is_zero()).then_some(d);
            out.sticky = true;
        }
        "loadbalancer.sticky.cookie.path" => {
            if !value.trim().starts_with('/') {
                return Err(invalid(label, value, "a cookie path starts with `/`"));
            }
            out.cookie.path = value.trim().to_owned();
            out.sticky = true;
        }
        _ => ignored.push(label.to_owned()),
    }
    Ok(())
}
