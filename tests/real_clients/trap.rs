//! The traffic trap: an HTTP listener every `tailscaled` gets as `HTTP_PROXY`/`HTTPS_PROXY`.
//! Anything a client tries to fetch through a proxy lands here, is refused and recorded; the
//! runner fails the scenario that caused it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub struct Trap {
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    /// Starts the listener on a free loopback port (a thread that lives as long as the run).
    pub fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let line = line.trim();
                let entry = if line.is_empty() {
                    "(a connection without a request line)".to_string()
                } else {
                    line.to_string()
                };
                record.lock().unwrap().push(entry);
                let _ = stream.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Trap { url, seen }
    }

    /// What the trap saw since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}
