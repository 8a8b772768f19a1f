//! Every integration test that needs no Docker, in one binary: one link instead of twenty,
//! which keeps CI's disk use and build time down. Each module is one area of behaviour, tested
//! through real sockets on 127.0.0.1. The Swarm tests are the separate `swarm_e2e` binary.

mod harness;
mod support;

mod algorithms;
mod backend_tls;
mod backpressure;
mod balancing;
mod bodies;
mod cli;
mod client_timeouts;
mod file_reload;
mod grpc;
mod headers;
mod health;
mod keepalive;
mod l4;
mod parking;
mod pool;
mod resilience;
mod retry;
mod routing;
mod service_options;
mod shutdown;
mod status;
mod sticky;
mod sticky_sessions;
mod tls;
mod websocket;
