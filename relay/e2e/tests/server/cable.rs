//! A TCP "cable" between a relay and its upstream that the test can cut abruptly (every
//! connection dropped at once, nothing listening) and reconnect to another upstream on the
//! same address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct Cable {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: Option<JoinHandle<()>>,
}

impl Cable {
    pub async fn connect(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cable = Self {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target)),
            task: None,
        };
        cable.run(listener);
        cable
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn run(&mut self, listener: TcpListener) {
        let target = Arc::clone(&self.target);
        self.task = Some(tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let to = *target.lock().unwrap();
                        pipes.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
                }
            }
        }));
    }

    /// Drops every connection through the cable and stops listening.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address, now towards `target`.
    pub async fn reconnect(&mut self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener);
    }
}
