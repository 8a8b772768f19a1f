//! Layer-4 forwarding end to end: real peers on 127.0.0.1 through limpet's TCP and UDP
//! front ports, configured through the file provider's `[tcp.*]` and `[udp.*]` tables.

use crate::support::l4 as support;

use std::collections::BTreeSet;
use std::time::Duration;

use limpet::l4::Reserved;
use limpet::table::l4::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::*;

#[tokio::test]
async fn tcp_echo_carries_every_byte_and_the_half_close() {
    let echo = tcp_echo().await;
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.echo]\nfront_port = {port}\nservers = {}\n",
        servers(&[echo.addr])
    ))
    .await;
    let mut client = connect_when_listening(port).await;
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    // Write everything, then half-close: the echo only ends its reply when it sees our FIN,
    // so reading to the end proves the FIN went through while the reply still flowed back.
    let (mut r, mut w) = client.split();
    let writer = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let reader = async {
        r.read_to_end(&mut echoed).await.unwrap();
    };
    within("the echo", async { tokio::join!(writer, reader) }).await;
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs from what was sent");
}

#[tokio::test]
async fn a_server_that_speaks_first_is_heard_without_the_client_saying_anything() {
    let greeter = tcp_greeter("hello from the server").await;
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.greet]\nfront_port = {port}\nservers = {}\n",
        servers(&[greeter.addr])
    ))
    .await;
    let client = connect_when_listening(port).await;
    let mut line = String::new();
    within("the greeting", async {
        tokio::io::AsyncBufReadExt::read_line(&mut BufReader::new(client), &mut line).await
    })
    .await
    .unwrap();
    assert_eq!(line, "hello from the server\n");
}

/// The name a greeter backend says first on a new connection through `port`.
async fn greeting(port: u16) -> (String, TcpStream) {
    let mut s = connect_when_listening(port).await;
    let mut buf = Vec::new();
    within("a greeting", async {
        while !buf.ends_with(b"\n") {
            let mut byte = [0u8];
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            buf.push(byte[0]);
        }
    })
    .await;
    (String::from_utf8(buf).unwrap().trim().to_owned(), s)
}

#[tokio::test]
async fn balancing_round_robin_least_connections_and_client_ip() {
    let a = tcp_greeter("a").await;
    let b = tcp_greeter("b").await;
    let (rr, lc, ip) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let both = servers(&[a.addr, b.addr]);
    let _limpet = limpet(&format!(
        "[tcp.rr]\nfront_port = {rr}\nbalance = \"roundrobin\"\nservers = {both}\n\
         [tcp.lc]\nfront_port = {lc}\nbalance = \"leastconn\"\nservers = {both}\n\
         [tcp.ip]\nfront_port = {ip}\nbalance = \"clientip\"\nservers = {both}\n"
    ))
    .await;

    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(greeting(rr).await.0);
    }
    let alternating = names.windows(2).all(|w| w[0] != w[1]);
    assert!(alternating, "round robin: {names:?}");

    // Least connections, with every connection held open: the next one always goes to the
    // server with fewer, so four end up two and two (round robin could do that too, but
    // the first two must differ whatever the tie-break).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(greeting(lc).await);
    }
    assert_ne!(held[0].0, held[1].0, "least connections");
    let on_a = held.iter().filter(|(name, _)| name == "a").count();
    assert_eq!(on_a, 2, "least connections");

    // Client-IP affinity: every connection from 127.0.0.1 lands on the same server.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        seen.insert(greeting(ip).await.0);
    }
    assert_eq!(seen.len(), 1, "client ip: {seen:?}");
}

#[tokio::test]
async fn a_redis_protocol_exchange_goes_through() {
    let redis = resp_server().await;
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.redis]\nfront_port = {port}\nservers = {}\n",
        servers(&[redis.addr])
    ))
    .await;
    let stream = connect_when_listening(port).await;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // Pipelined, as redis clients do: several commands before any reply is read.
    let mut batch = resp(&["PING"]);
    batch.extend(resp(&["SET", "greeting", "hello over tcp"]));
    batch.extend(resp(&["INCR", "hits"]));
    batch.extend(resp(&["INCR", "hits"]));
    batch.extend(resp(&["GET", "greeting"]));
    batch.extend(resp(&["GET", "missing"]));
    w.write_all(&batch).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(read_resp_reply(&mut r).await);
    }
    assert_eq!(
        replies,
        ["+PONG", "+OK", ":1", ":2", "hello over tcp", "$-1"]
    );
}

/// Alibaba's Redis example (`aliyun.lb.port_6379=tcp://slb_redis_app:6379`) against the
/// real thing, when redis-server is installed; the RESP test above covers the protocol
/// without it.
#[tokio::test]
async fn real_redis_server_when_installed() {
    let Some(binary) = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!("SKIPPED real_redis_server_when_installed: no redis-server in /usr/bin or /usr/sbin (apt-get install redis-server)");
        return;
    };
    let redis_port = free_tcp_port();
    let _redis = Child(
        std::process::Command::new(binary)
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.redis]\nfront_port = {port}\nservers = [{{ address = \"127.0.0.1:{redis_port}\" }}]\n"
    ))
    .await;
    // Until redis-server is up, limpet accepts and then closes (connect refused upstream).
    let reply = within("redis-server through limpet", async {
        loop {
            let mut s = connect_when_listening(port).await;
            if s.write_all(&resp(&["PING"])).await.is_ok() {
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).await.is_ok() {
                    return (buf, s);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(&reply.0, b"+PONG\r\n");
    let (r, mut w) = reply.1.into_split();
    let mut r = BufReader::new(r);
    for expected in [":1", ":2", ":3"] {
        w.write_all(&resp(&["INCR", "hits"])).await.unwrap();
        assert_eq!(read_resp_reply(&mut r).await, expected);
    }
}

#[tokio::test]
async fn a_server_refusing_connections_is_skipped() {
    let echo = tcp_echo().await;
    let dead = front(free_tcp_port());
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.r]\nfront_port = {port}\nbalance = \"roundrobin\"\nservers = {}\n",
        servers(&[dead, echo.addr])
    ))
    .await;
    for i in 0..6u8 {
        let mut s = connect_when_listening(port).await;
        s.write_all(&[i]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_to_close(&mut s).await, [i], "connection {i}");
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let echo = tcp_echo().await;
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.r]\nfront_port = {port}\nidle_timeout = \"300ms\"\nservers = {}\n",
        servers(&[echo.addr])
    ))
    .await;
    let mut s = connect_when_listening(port).await;
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("the echo", s.read_exact(&mut buf)).await.unwrap();
    // Now silence: limpet closes the connection on its own, without our FIN.
    let rest = read_to_close(&mut s).await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn tls_passthrough_routes_by_server_name_without_terminating() {
    let a = tcp_recorder("a").await;
    let net = tcp_recorder("net").await;
    let plain = tcp_recorder("plain").await;
    let (shared, strict) = (free_tcp_port(), free_tcp_port());
    let _limpet = limpet(&format!(
        "[tcp.a]\nfront_port = {shared}\nsni = [\"a.example.org\"]\nservers = {}\n\
         [tcp.net]\nfront_port = {shared}\nsni = [\"*.example.net\"]\nservers = {}\n\
         [tcp.plain]\nfront_port = {shared}\nservers = {}\n\
         [tcp.only]\nfront_port = {strict}\nsni = [\"a.example.org\"]\nservers = {}\n",
        servers(&[a.backend.addr]),
        servers(&[net.backend.addr]),
        servers(&[plain.backend.addr]),
        servers(&[a.backend.addr]),
    ))
    .await;

    // Sends `bytes` (in pieces of `piece`, pausing between them) then a FIN, and returns the
    // name of the backend that answered (empty when limpet closed the connection).
    async fn exchange(port: u16, bytes: &[u8], piece: usize) -> String {
        let mut s = connect_when_listening(port).await;
        for chunk in bytes.chunks(piece) {
            if s.write_all(chunk).await.is_err() {
                break;
            }
            if piece < bytes.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let _ = s.shutdown().await;
        String::from_utf8(read_to_close(&mut s).await).unwrap()
    }

    let mut hello_a = client_hello(Some("A.Example.org"));
    hello_a.extend_from_slice(b"...and the rest of the handshake");
    assert_eq!(exchange(shared, &hello_a, hello_a.len()).await, "a");
    assert_eq!(a.sessions(), [hello_a.clone()], "forwarded byte for byte");

    // A ClientHello arriving in 7-byte pieces is still read whole before routing.
    let hello_net = client_hello(Some("db.example.net"));
    assert_eq!(exchange(shared, &hello_net, 7).await, "net");
    assert_eq!(net.sessions(), [hello_net]);

    // No SNI, an unknown name, and plain text all take the port's default route.
    for bytes in [
        client_hello(None),
        client_hello(Some("unknown.example.com")),
        b"PING\r\n".to_vec(),
    ] {
        assert_eq!(exchange(shared, &bytes, bytes.len()).await, "plain");
    }

    // Garbage that starts like TLS closes that connection only: a well-formed one opened
    // before it is answered after it.
    let mut good = connect_when_listening(shared).await;
    let garbage = [22u8, 3, 1, 0, 0, 0xde, 0xad];
    assert_eq!(exchange(shared, &garbage, garbage.len()).await, "");
    good.write_all(&client_hello(Some("a.example.org")))
        .await
        .unwrap();
    good.shutdown().await.unwrap();
    assert_eq!(read_to_close(&mut good).await, b"a");

    // A port without a default route refuses what no name matches.
    let other = client_hello(Some("b.example.org"));
    assert_eq!(exchange(strict, &other, other.len()).await, "");
    assert_eq!(exchange(strict, b"GET /\r\n", 7).await, "");
    let hello = client_hello(Some("a.example.org"));
    assert_eq!(exchange(strict, &hello, hello.len()).await, "a");
    assert_eq!(plain.sessions().len(), 3, "{:?}", plain.sessions());
}

/// Two UDP echo servers behind a round-robin `[udp.echo]` route on a free port, with
/// `extra` settings; the echoes and limpet live as long as the returned values.
async fn two_udp_echoes_behind_limpet(extra: &str) -> ([Backend; 2], u16, Limpet) {
    let echoes = [udp_echo("a").await, udp_echo("b").await];
    let port = free_udp_port();
    let limpet = limpet(&format!(
        "[udp.echo]\nfront_port = {port}\nbalance = \"roundrobin\"\n{extra}servers = {}\n",
        servers(&[echoes[0].addr, echoes[1].addr])
    ))
    .await;
    (echoes, port, limpet)
}

#[tokio::test]
async fn udp_echo_keeps_each_client_on_one_server() {
    let (_echoes, port, _limpet) = two_udp_echoes_behind_limpet("").await;
    let first = udp_client(port).await;
    let reply = udp_ask_until_answered(&first, "hello").await;
    let (server, text) = reply.split_once(':').unwrap();
    assert_eq!(text, "hello");
    // Replies come back from the front port the client wrote to (the socket is connected
    // to it, so anything else would not even be received).
    for i in 0..5 {
        let r = udp_ask_until_answered(&first, &format!("n{i}")).await;
        assert_eq!(
            r,
            format!("{server}:n{i}"),
            "a session sticks to its server"
        );
    }
    let second = udp_client(port).await;
    let other = udp_ask_until_answered(&second, "hi").await;
    assert_ne!(
        other.split_once(':').unwrap().0,
        server,
        "round robin per session"
    );
}

#[tokio::test]
async fn the_first_datagram_of_every_new_session_is_delivered() {
    let (_echoes, port, _limpet) = two_udp_echoes_behind_limpet("").await;
    // Once limpet listens, no datagram is lost on loopback: each new client's single
    // datagram must be answered, not only a retransmission of it (a DNS or syslog client
    // that sends once from a fresh socket would otherwise never be served).
    udp_ask_until_answered(&udp_client(port).await, "warm-up").await;
    for i in 0..6 {
        let client = udp_client(port).await;
        let reply = udp_ask(&client, &format!("only {i}"), Duration::from_secs(5)).await;
        assert!(
            reply
                .as_deref()
                .is_some_and(|r| r.ends_with(&format!(":only {i}"))),
            "new session {i}: its first datagram was answered with {reply:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_udp_session_ends_and_the_next_datagram_opens_another() {
    let (_echoes, port, _limpet) = two_udp_echoes_behind_limpet("idle_timeout = \"200ms\"\n").await;
    let client = udp_client(port).await;
    let before = udp_ask_until_answered(&client, "x").await;
    // Past the idle timeout and a sweep, the session is gone; round robin moves on.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = udp_ask_until_answered(&client, "x").await;
    assert_ne!(before, after);
}

#[tokio::test]
async fn a_full_udp_session_table_refuses_new_clients_until_a_session_goes_quiet() {
    let a = udp_echo("a").await;
    let port = free_udp_port();
    let _limpet = limpet_with(
        &format!(
            "[udp.echo]\nfront_port = {port}\nservers = {}\n",
            servers(&[a.addr])
        ),
        Options {
            udp_max_sessions: 1,
            ..Options::default()
        },
    )
    .await;
    let busy = udp_client(port).await;
    udp_ask_until_answered(&busy, "1").await;
    let newcomer = udp_client(port).await;
    // The only session is active: the newcomer is refused, the busy client still served.
    assert_eq!(
        udp_ask(&newcomer, "refused?", Duration::from_millis(300)).await,
        None
    );
    assert_eq!(udp_ask_until_answered(&busy, "2").await, "a:2");
    // Once the busy client has been quiet for over a second, its session makes room.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(udp_ask_until_answered(&newcomer, "now").await, "a:now");
}

#[tokio::test]
async fn listeners_follow_the_file_and_open_connections_survive_changes() {
    let a = tcp_greeter("a").await;
    let b = tcp_greeter("b").await;
    let (p1, p2) = (free_tcp_port(), free_tcp_port());
    let limpet = limpet(&format!(
        "[tcp.r]\nfront_port = {p1}\nservers = {}\n",
        servers(&[a.addr])
    ))
    .await;
    let (name, mut open) = greeting(p1).await;
    assert_eq!(name, "a");

    // New servers, same port: new connections go to b at once, without a rebind, and the
    // open connection to a carries on.
    limpet.rewrite(&format!(
        "[tcp.r]\nfront_port = {p1}\nservers = {}\n",
        servers(&[b.addr])
    ));
    within("new connections to reach b", async {
        while greeting(p1).await.0 != "b" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    open.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    within("the old connection's echo", open.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"still here");

    // The route moves port: the old one is released, the new one listened on.
    limpet.rewrite(&format!(
        "[tcp.r]\nfront_port = {p2}\nservers = {}\n",
        servers(&[b.addr])
    ));
    assert_eq!(greeting(p2).await.0, "b");
    until_refused(p1).await;
    open.write_all(b"and still").await.unwrap();
    let mut buf = [0u8; 9];
    within(
        "the old connection after its port left",
        open.read_exact(&mut buf),
    )
    .await
    .unwrap();
    assert_eq!(&buf, b"and still");
}

#[tokio::test]
async fn the_first_service_by_name_keeps_a_contested_port() {
    let a = tcp_greeter("alpha").await;
    let b = tcp_greeter("beta").await;
    let port = free_tcp_port();
    // `beta` is written first; the name decides, not the order.
    let _limpet = limpet(&format!(
        "[tcp.beta]\nfront_port = {port}\nservers = {}\n\
         [tcp.alpha]\nfront_port = {port}\nservers = {}\n",
        servers(&[b.addr]),
        servers(&[a.addr]),
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(greeting(port).await.0, "alpha");
    }
}

#[tokio::test]
async fn limpets_own_ports_are_left_alone() {
    let a = tcp_greeter("a").await;
    let (reserved, other) = (free_tcp_port(), free_tcp_port());
    let _limpet = limpet_with(
        &format!(
            "[tcp.greedy]\nfront_port = {reserved}\nservers = {s}\n\
             [tcp.fine]\nfront_port = {other}\nservers = {s}\n",
            s = servers(&[a.addr])
        ),
        Options {
            reserved: vec![Reserved {
                protocol: Protocol::Tcp,
                port: reserved,
                owner: "limpet's HTTP entrypoint".into(),
            }],
            ..Options::default()
        },
    )
    .await;
    // Both routes are in the same table: once one port is listened on, the other was
    // considered and refused.
    assert_eq!(greeting(other).await.0, "a");
    assert!(TcpStream::connect(front(reserved)).await.is_err());
}

/// The whole of `limpet::run` from a command line: the L4 manager starts with the flags'
/// address, and a route wanting the HTTP entrypoint's port leaves it to HTTP.
#[tokio::test]
async fn run_starts_the_l4_listeners_from_the_command_line() {
    use clap::Parser;
    let echo = tcp_echo().await;
    let (http, l4_port) = (free_tcp_port(), free_tcp_port());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("limpet-l4-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limpet.toml");
    std::fs::write(
        &file,
        format!(
            "[tcp.echo]\nfront_port = {l4_port}\nservers = {s}\n\
             [tcp.greedy]\nfront_port = {http}\nservers = {s}\n",
            s = servers(&[echo.addr])
        ),
    )
    .unwrap();
    let config = limpet::cli::Cli::try_parse_from([
        "limpet",
        &format!("--entrypoint=127.0.0.1:{http}"),
        &format!("--file.filename={}", file.display()),
        "--l4.address=127.0.0.1",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(limpet::run(config, async {
        let _ = stopped.await;
    }));

    let mut s = connect_when_listening(l4_port).await;
    s.write_all(b"through run").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_close(&mut s).await, b"through run");

    // The entrypoint's port still speaks HTTP (a 404: no HTTP route), not the echo.
    let mut h = TcpStream::connect(front(http)).await.unwrap();
    h.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = String::from_utf8(read_to_close(&mut h).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    let _ = stop.send(());
    within("limpet to stop", running).await.unwrap().unwrap();
}

/// Real TLS on both ends (rustls): clients verify the backends' certificates through limpet,
/// which has none for these names and only reads the ClientHello to choose.
#[tokio::test]
async fn real_tls_clients_reach_their_servers_through_passthrough() {
    let a = tls_backend("a").await;
    let b = tls_backend("b").await;
    let port = free_tcp_port();
    let _limpet = limpet(&format!(
        "[tcp.a]\nfront_port = {port}\nsni = [\"a.example.org\"]\nservers = {}\n\
         [tcp.b]\nfront_port = {port}\nsni = [\"b.example.org\"]\nservers = {}\n",
        servers(&[a.addr]),
        servers(&[b.addr]),
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(tls_ask(port, "a.example.org").await.unwrap(), "a");
        assert_eq!(tls_ask(port, "b.example.org").await.unwrap(), "b");
    }
    // No route for the name: limpet closes, and the handshake fails on the client only.
    assert!(tls_ask(port, "c.example.org").await.is_err());
    assert_eq!(tls_ask(port, "a.example.org").await.unwrap(), "a");
}

#[tokio::test]
async fn tcp_connections_beyond_the_limit_are_closed_and_the_place_comes_back() {
    let greeter = tcp_greeter("hi").await;
    let port = free_tcp_port();
    let _limpet = limpet_with(
        &format!(
            "[tcp.r]\nfront_port = {port}\nservers = {}\n",
            servers(&[greeter.addr])
        ),
        Options {
            max_tcp_connections: 1,
            ..Options::default()
        },
    )
    .await;
    let (name, held) = greeting(port).await;
    assert_eq!(name, "hi");
    // The only place is taken: the next connection is accepted and closed, unanswered.
    let mut refused = connect_when_listening(port).await;
    assert!(read_to_close(&mut refused).await.is_empty());
    drop(held);
    within("the place to come back", async {
        loop {
            let mut s = connect_when_listening(port).await;
            let mut buf = [0u8; 3];
            if s.read_exact(&mut buf).await.is_ok() {
                assert_eq!(&buf, b"hi\n");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Whether the server at `addr` of the TCP route on `port` takes new connections.
fn takes_new(limpet: &Limpet, port: u16, addr: std::net::SocketAddr) -> bool {
    let table = limpet.table.load_full();
    let route = &table.l4_routes(Protocol::Tcp, port)[0];
    let server = route
        .servers
        .iter()
        .find(|s| s.addr == addr)
        .unwrap_or_else(|| panic!("{addr} is not a server of the route"));
    server.takes_new(limpet::table::state::now_ms())
}

#[tokio::test]
async fn a_tcp_monitor_takes_a_dead_server_out_and_brings_it_back() {
    let a = tcp_greeter("a").await;
    let b = tcp_greeter("b").await;
    let b_addr = b.addr;
    let port = free_tcp_port();
    let limpet = limpet(&format!(
        "[tcp.r]\nfront_port = {port}\nbalance = \"roundrobin\"\nservers = {}\n\
         health_check = {{ interval = \"100ms\", connect_timeout = \"1s\", rise = 1, fall = 1 }}\n",
        servers(&[a.addr, b.addr])
    ))
    .await;
    let _ = connect_when_listening(port).await;
    let eventually = |what: &'static str, up: bool| {
        let limpet = &limpet;
        within(what, async move {
            while takes_new(limpet, port, b_addr) != up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    drop(b);
    eventually("the monitor to take b out", false).await;
    // Out before any client met it: every connection goes to a.
    for _ in 0..4 {
        assert_eq!(greeting(port).await.0, "a");
    }

    let _b = tcp_greeter_on("b", b_addr).await;
    eventually("the monitor to bring b back", true).await;
    let mut names = BTreeSet::new();
    for _ in 0..4 {
        names.insert(greeting(port).await.0);
    }
    assert_eq!(names, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
}

#[tokio::test]
async fn with_start_down_a_tcp_server_takes_nothing_before_its_first_pass() {
    let a = tcp_greeter("a").await;
    let never = front(free_tcp_port());
    let port = free_tcp_port();
    let limpet = limpet(&format!(
        "[tcp.r]\nfront_port = {port}\nbalance = \"roundrobin\"\nservers = {}\n\
         health_check = {{ interval = \"1h\", start_down = true }}\n",
        servers(&[never, a.addr])
    ))
    .await;
    let _ = connect_when_listening(port).await;
    // The first probe fails and the next is an hour away: `never` stays out, a is in.
    assert!(!takes_new(&limpet, port, never));
    within("a's first probe to pass", async {
        while !takes_new(&limpet, port, a.addr) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(greeting(port).await.0, "a");
}
