//! Clients of a `dns` listener: `dig` (the real one, over UDP and TCP), and raw
//! datagrams for what no well-behaved client sends.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio::process::Command;

/// What `dig` printed for one question.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: String,
    /// The answer section: `(name, type, data)`.
    pub answers: Vec<(String, String, String)>,
    pub text: String,
}

impl Dig {
    /// The data of every answer of `rtype`.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|(_, t, _)| t == rtype)
            .map(|(_, _, d)| d.clone())
            .collect()
    }
}

/// Runs `dig @server -p port ARGS` and parses what it printed.
pub async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=3", "+tries=1", "+nocookie"])
        .args(args)
        .output()
        .await
        .expect("dig runs (Debian package bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let flags = text
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .to_owned();
    let mut answers = Vec::new();
    let mut in_answers = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answers = true;
            continue;
        }
        if in_answers {
            if line.trim().is_empty() {
                break;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 5 {
                answers.push((
                    parts[0].to_owned(),
                    parts[3].to_owned(),
                    parts[4..].join(" "),
                ));
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        text,
    }
}

/// A query for `name` of `rtype` with id `id`, as bytes.
pub fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

/// Sends `bytes` to `server` and waits up to `wait` for one answer.
pub async fn exchange(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Message::from_vec(&buf[..len]).expect("the gateway answers with a valid message"))
}
