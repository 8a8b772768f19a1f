//! TCP and UDP forwarding by label on the swarm (issue 5, items 6 and 7): a backend service
//! labelled in Alibaba's form (`aliyun.lb.port_<container port>=tcp://<name>:<front port>`,
//! and `udp://`) and in limpet's own (`limpet.tcp.<name>.frontport`, `.port`), reached through
//! limpet's TCP and UDP entrypoints, which are published in host mode like its HTTP one.
//!
//! whoami answers TCP on 7000 (`I'm <hostname>\n`, then an echo until the client closes its
//! side) and UDP on 7001 (`I'm <hostname>: ` before each datagram), so each answer names the
//! task that served it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::swarm::{enabled, free_ports, wait_for, Custom, Tutorial};

/// limpet's front ports inside its container (published on free host ports).
const ALIYUN_TCP: u16 = 9000;
const ALIYUN_UDP: u16 = 9001;
const OWN_TCP: u16 = 9002;
const OWN_UDP: u16 = 9003;

const READY_WITHIN: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(100);

#[test]
fn tcp_and_udp_labels_route_to_the_tasks() {
    if !enabled("tcp_and_udp_labels_route_to_the_tasks") {
        return;
    }
    let [aliyun_tcp, own_tcp] = free_ports();
    let [aliyun_udp, own_udp] = free_udp_ports();
    let publish = |target: u16, published: u16, protocol: &str| {
        format!("mode=host,target={target},published={published},protocol={protocol}")
    };
    let mut custom = Custom::default()
        .whoami(
            "--label",
            format!("aliyun.lb.port_7000=tcp://e2e_echo:{ALIYUN_TCP}"),
        )
        .whoami(
            "--label",
            format!("aliyun.lb.port_7001=udp://e2e_echo:{ALIYUN_UDP}"),
        )
        .whoami("--label", format!("limpet.tcp.echo.frontport={OWN_TCP}"))
        .whoami("--label", "limpet.tcp.echo.port=7000")
        .whoami("--label", format!("limpet.udp.echo.frontport={OWN_UDP}"))
        .whoami("--label", "limpet.udp.echo.port=7001")
        .limpet("--publish", publish(ALIYUN_TCP, aliyun_tcp, "tcp"))
        .limpet("--publish", publish(ALIYUN_UDP, aliyun_udp, "udp"))
        .limpet("--publish", publish(OWN_TCP, own_tcp, "tcp"))
        .limpet("--publish", publish(OWN_UDP, own_udp, "udp"));
    custom.whoami_args = ["--tcp-echo", "7000", "--udp-echo", "7001"]
        .map(str::to_owned)
        .to_vec();
    let setup = Tutorial::deploy_with("l4", 2, custom);
    let tasks: BTreeSet<String> = setup.entry.backends(2, READY_WITHIN).into_keys().collect();

    for (form, port) in [("aliyun tcp://", aliyun_tcp), ("limpet.tcp", own_tcp)] {
        wait_for(
            &format!("{form} on port {port}"),
            READY_WITHIN,
            EVERY,
            || tcp_echo(port, "ready").map(|_| ()),
        );
        let mut served = BTreeSet::new();
        for i in 0..6 {
            let sent = format!("hello {i} through {form}");
            let (by, echoed) = tcp_echo(port, &sent).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(
                echoed, sent,
                "{form}: the echo after the client's half-close"
            );
            served.insert(by);
        }
        eprintln!("l4: {form} on host port {port}: 6 connections served by {served:?}");
        assert_eq!(
            served, tasks,
            "{form}: connections are balanced over both tasks"
        );
    }

    for (form, port) in [("aliyun udp://", aliyun_udp), ("limpet.udp", own_udp)] {
        wait_for(
            &format!("{form} on port {port}"),
            READY_WITHIN,
            EVERY,
            || {
                let socket = udp_client();
                udp_echo(&socket, port, "ready").map(|_| ())
            },
        );
        let mut served = BTreeSet::new();
        for client in 0..6 {
            let socket = udp_client();
            let mut by_this_client = BTreeSet::new();
            for n in 0..3 {
                let sent = format!("datagram {n} of client {client} through {form}");
                let by = udp_echo(&socket, port, &sent).unwrap_or_else(|e| panic!("{form}: {e}"));
                by_this_client.insert(by);
            }
            assert_eq!(
                by_this_client.len(),
                1,
                "{form}: one client's datagrams go to one task: {by_this_client:?}"
            );
            served.extend(by_this_client);
        }
        eprintln!("l4: {form} on host port {port}: 6 clients × 3 datagrams served by {served:?}");
        assert_eq!(served, tasks, "{form}: clients are spread over both tasks");
    }
}

/// One TCP connection: reads the greeting, sends `text`, closes the sending side and reads
/// the echo to the end. Returns the task that answered and what came back.
fn tcp_echo(port: u16, text: &str) -> Result<(String, String), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .map_err(|e| format!("greeting: {e}"))?;
    let by = greeting
        .trim_end()
        .strip_prefix("I'm ")
        .ok_or(format!("greeting {greeting:?}"))?
        .to_owned();
    let stream = reader.get_mut();
    stream
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut echoed = String::new();
    reader
        .read_to_string(&mut echoed)
        .map_err(|e| format!("echo: {e}"))?;
    Ok((by, echoed))
}

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("a timeout");
    socket
}

/// Sends `text` and returns the task named in the answer, which must echo it.
fn udp_echo(socket: &UdpSocket, port: u16, text: &str) -> Result<String, String> {
    socket
        .send_to(text.as_bytes(), (Ipv4Addr::LOCALHOST, port))
        .map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 2048];
    let n = socket
        .recv(&mut buffer)
        .map_err(|e| format!("no answer: {e}"))?;
    let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
    let (by, echoed) = answer
        .strip_prefix("I'm ")
        .and_then(|a| a.split_once(": "))
        .ok_or(format!("answer {answer:?}"))?;
    if echoed != text {
        return Err(format!("sent {text:?}, got back {echoed:?}"));
    }
    Ok(by.to_owned())
}

/// Free UDP ports, for host-mode publishing (held together so the kernel gives distinct
/// ones).
fn free_udp_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<UdpSocket> = (0..N)
        .map(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("an ephemeral UDP port"))
        .collect();
    std::array::from_fn(|i| sockets[i].local_addr().expect("a bound address").port())
}
