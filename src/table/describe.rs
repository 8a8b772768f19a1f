//! The table in forms people read: the debug log line the tutorial shows Traefik printing
//! ("servers with weights, the sticky cookie name") and the JSON served by `--web`.

use std::fmt;

use serde_json::{json, Value};

use super::{Readiness, Table};

impl Table {
    pub fn to_json(&self) -> Value {
        let services: serde_json::Map<String, Value> = self
            .services
            .iter()
            .map(|s| {
                let servers: Vec<Value> = s
                    .servers
                    .iter()
                    .map(|sv| json!({ "id": &*sv.id, "url": &*sv.url, "weight": sv.weight }))
                    .collect();
                let value = json!({
                    "provider": s.provider.as_str(),
                    "method": s.balancer.method().to_string(),
                    "passHostHeader": s.pass_host_header,
                    "sticky": s.sticky.as_ref().map(|st| json!({ "cookieName": &*st.cookie_name })),
                    "servers": servers,
                });
                (s.name.to_string(), value)
            })
            .collect();
        let routers: Vec<Value> = self
            .routers
            .iter()
            .map(|r| {
                json!({
                    "name": &*r.def.name,
                    "rule": &*r.def.rule.source,
                    "priority": r.def.priority,
                    "service": &*self.services[r.service].name,
                })
            })
            .collect();
        let l4: Vec<Value> = self
            .l4
            .iter()
            .map(|r| {
                let servers: Vec<Value> = r
                    .servers
                    .iter()
                    .map(|sv| json!({ "id": &*sv.id, "address": sv.addr.to_string(), "weight": sv.weight }))
                    .collect();
                json!({
                    "name": &*r.name,
                    "service": &*r.service,
                    "protocol": r.protocol.as_str(),
                    "frontPort": r.front_port,
                    "balance": r.balance.to_string(),
                    "idleTimeoutMs": r.idle_timeout.as_millis() as u64,
                    "sni": r.sni.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "lb": r.lb_name.as_deref(),
                    "servers": servers,
                })
            })
            .collect();
        json!({
            "ready": self.readiness == Readiness::Ready,
            "routers": routers,
            "services": services,
            "l4": l4,
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} routers, {} services, {} servers",
            self.routers.len(),
            self.services.len(),
            self.server_count()
        )?;
        for r in self.routers.iter() {
            let s = &self.services[r.service];
            write!(
                f,
                "\n  router {} [{}] priority {} -> service {}@{} ({}",
                r.def.name,
                r.def.rule,
                r.def.priority,
                s.name,
                s.provider.as_str(),
                s.balancer.method()
            )?;
            match &s.sticky {
                Some(st) => write!(f, ", sticky cookie {})", st.cookie_name)?,
                None => f.write_str(", not sticky)")?,
            }
            for sv in s.servers.iter() {
                write!(
                    f,
                    "\n    server {} at {} weight {}",
                    sv.id, sv.url, sv.weight
                )?;
            }
        }
        for r in self.l4.iter() {
            write!(
                f,
                "\n  {} :{} -> {} ({}",
                r.protocol, r.front_port, r.name, r.balance
            )?;
            if !r.sni.is_empty() {
                let names: Vec<String> = r.sni.iter().map(ToString::to_string).collect();
                write!(f, ", sni {}", names.join(","))?;
            }
            if let Some(lb) = &r.lb_name {
                write!(f, ", lb {lb}")?;
            }
            f.write_str(")")?;
            for sv in r.servers.iter() {
                write!(
                    f,
                    "\n    server {} at {} weight {}",
                    sv.id, sv.addr, sv.weight
                )?;
            }
        }
        Ok(())
    }
}
